"""Accuracy benchmark: is a distilled student better than the same student
trained on labels alone, and better than one distilled by
`keras.distillation`?

The setting is one where a user needs distillation: scikit-learn's bundled
digits; a teacher MLP trained on every label of the training split; a
student MLP with some capacity (32 hidden units, about 1/38 of the
teacher's parameters) whose owner has labels for 20% of the training
inputs only; every training input is a transfer set that the teacher
labels with its soft targets. The distilled students train on the transfer
set without labels (`student_loss_weight=0`, the same for both libraries),
all with the same optimizer, epochs and temperature. Two reference rows
show where distillation does not help: the student trained on every label,
and distilled with every label as well.

Each figure is the test accuracy after the last epoch, mean +- std over 5
seeds (the seed sets the split, the initial weights and the shuffling).

    python benchmarks/accuracy.py          # 4-5 minutes on 2 busy CPU cores
"""

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras warns that fit(shuffle=True) is ignored for any tf.data.Dataset; the
# cached datasets reshuffle themselves at each epoch.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kerasdistill  # noqa: E402
from kerasdistill.demo import digits_split  # noqa: E402

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TEMPERATURE, BATCH_SIZE, LABELED_FRACTION = 4.0, 32, 0.2


def mlp(widths, name, dropout=0.0):
    """A ReLU MLP; its last hidden layer is `{name}_hint`."""
    inputs = keras.Input((64,), name=f"{name}_input")
    hidden = inputs
    for i, width in enumerate(widths):
        layer_name = f"{name}_hint" if i == len(widths) - 1 else f"{name}_dense{i}"
        hidden = keras.layers.Dense(width, activation="relu", name=layer_name)(hidden)
        if dropout:
            hidden = keras.layers.Dropout(dropout, name=f"{name}_dropout{i}")(hidden)
    outputs = keras.layers.Dense(10, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def student():
    return mlp([32], "student")


def accuracy(model, data):
    logits = model.predict(data["x_test"], verbose=0)
    return float(np.mean(np.argmax(logits, -1) == data["y_test"]))


def adam():
    return keras.optimizers.Adam(3e-3)


def hint_loss(module):
    return module.FeatureDistillation(
        loss="mse", teacher_layer_name="teacher_hint", student_layer_name="student_hint"
    )


def run_seed(seed, epochs):
    """Returns {row name: test accuracy} for one seed."""
    keras.utils.set_random_seed(seed)
    data = digits_split(LABELED_FRACTION, seed)
    x_train, x_labeled, y_labeled = data["x_train"], data["x_labeled"], data["y_labeled"]
    results = {}

    teacher = mlp([256, 256, 32], "teacher", dropout=0.3)
    teacher.compile(adam(), SPARSE_CE)
    teacher.fit(x_train, data["y_train"], epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    results["teacher (all labels)"] = accuracy(teacher, data)

    keras.utils.set_random_seed(seed)
    initial = student()  # every student starts from these weights

    def fresh_student():
        model = keras.models.clone_model(initial)
        model.set_weights(initial.get_weights())
        return model

    def fit(model, *args, **kwargs):
        model.fit(*args, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, **kwargs)
        return model

    baseline = fresh_student()
    baseline.compile(adam(), SPARSE_CE)
    labeled = f"student, labels only ({len(x_labeled)} labels)"
    results[labeled] = accuracy(fit(baseline, x_labeled, y_labeled), data)

    for label, logits_loss in [
        ('keras.distillation, loss="kl_divergence" (default)', "kl_divergence"),
        ("keras.distillation, loss=KLDivergence()", keras.losses.KLDivergence()),
    ]:
        model = fresh_student()
        theirs = keras.distillation.Distiller(
            teacher, model,
            keras.distillation.LogitsDistillation(TEMPERATURE, loss=logits_loss),
            student_loss_weight=0.0,
        )
        theirs.compile(adam(), loss=SPARSE_CE)
        results[f"{label}, transfer set"] = accuracy(fit(theirs, x_train), data)

    ours_losses = {
        "kerasdistill, logits, transfer set": [kerasdistill.LogitsDistillation(TEMPERATURE)],
        "kerasdistill, logits + features, transfer set": [
            kerasdistill.LogitsDistillation(TEMPERATURE), hint_loss(kerasdistill)
        ],
    }
    # No augmentation on digits: the teacher's outputs are computed once.
    cached = kerasdistill.cache_teacher_outputs(
        teacher, x_train, ours_losses["kerasdistill, logits + features, transfer set"],
        batch_size=BATCH_SIZE,
    )
    for label, losses in ours_losses.items():
        model = fresh_student()
        ours = kerasdistill.Distiller(teacher, model, losses, student_loss_weight=0.0)
        ours.compile(adam(), SPARSE_CE)
        ours.fit(cached, epochs=epochs, verbose=0)
        results[label] = accuracy(model, data)

    everything = fresh_student()
    everything.compile(adam(), SPARSE_CE)
    results["reference: student, all labels"] = accuracy(
        fit(everything, x_train, data["y_train"]), data
    )
    model = fresh_student()
    ours = kerasdistill.Distiller(
        teacher, model, kerasdistill.LogitsDistillation(TEMPERATURE), student_loss_weight=0.5
    )
    ours.compile(adam(), SPARSE_CE)
    results["reference: kerasdistill, logits, all labels (alpha 0.5)"] = accuracy(
        fit(ours, x_train, data["y_train"]), data
    )
    return results, teacher.count_params(), initial.count_params()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = {}
    for seed in range(args.seeds):
        results, teacher_params, student_params = run_seed(seed, args.epochs)
        for name, value in results.items():
            rows.setdefault(name, []).append(value)
    width = max(len(name) for name in rows)
    print(
        f"digits, {args.epochs} epochs, temperature {TEMPERATURE}, teacher "
        f"{teacher_params:,} params, student {student_params:,} params; test "
        f"accuracy after the last epoch, mean +- std over {args.seeds} seeds"
    )
    print()
    print(f"{'model':<{width}}  {'accuracy':>16}")
    for name, values in rows.items():
        print(f"{name:<{width}}  {np.mean(values):>7.4f} +- {np.std(values):.4f}")
    print()
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
