"""Accuracy benchmark: is a distilled student better than the same student
trained on labels alone, and better than one distilled by
`keras.distillation`? Two tables: a transfer set, and the same labels.

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

"Same labels": the student's owner has every label the teacher had. The
teacher (the one of the transfer-set table, trained on the labels alone)
and each student train for the same epochs; the fair baseline is the
student trained on the labels with the same random shifts of +-1 pixel. Distillation rows use alpha 0.5 and T 4, the
augmented ones feed one shifted view per step to both networks
(`Distiller(augmentation=...)`, Beyer et al. 2022). "gap closed" is
`(acc - baseline) / (teacher - baseline)`, the baseline being the
label-only student with the row's augmentation (plain or shifts); n/a
where the teacher does not beat that baseline.

`--student cnn` replaces the MLP student of both tables with a small CNN
(8 filters of 3x3 on the 8x8 image, then 32 units) on the same inputs.

Each figure is the test accuracy after the last epoch, mean +- std over 5
seeds (the seed sets the split, the initial weights and the shuffling).

    python benchmarks/accuracy.py                  # both tables
    python benchmarks/accuracy.py --table same-labels
    python benchmarks/accuracy.py --table same-labels --student cnn
"""

import argparse
import os
import sys
import time
import warnings

# TensorFlow: Keras's RandomTranslation runs several times faster on it than
# on JAX on CPU, and the same-labels table augments every step.
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


def cnn_student():
    """A small CNN student: 8 filters of 3x3 on the 8x8 image, then 32
    units (`student_hint`), on the same flat inputs as the MLP."""
    inputs = keras.Input((64,), name="student_input")
    hidden = keras.layers.Reshape((8, 8, 1))(inputs)
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="student_conv")(hidden)
    hidden = keras.layers.Flatten()(hidden)
    hidden = keras.layers.Dense(32, activation="relu", name="student_hint")(hidden)
    outputs = keras.layers.Dense(10, name="student_logits")(hidden)
    return keras.Model(inputs, outputs, name="student")


STUDENTS = {"mlp": lambda: mlp([32], "student"), "cnn": cnn_student}


def student(kind="mlp"):
    """The student of `--student`: the MLP (32 hidden units) or the CNN."""
    return STUDENTS[kind]()


def accuracy(model, data):
    logits = model.predict(data["x_test"], verbose=0)
    return float(np.mean(np.argmax(logits, -1) == data["y_test"]))


def adam():
    return keras.optimizers.Adam(3e-3)


def shifts(seed):
    """Random shifts of the 8x8 digits by up to one pixel, on flat inputs."""
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Reshape((8, 8, 1)),
            keras.layers.RandomTranslation(
                1 / 8, 1 / 8, fill_mode="constant", seed=seed
            ),
            keras.layers.Reshape((64,)),
        ],
        name="shifts",
    )


def hint_loss(module):
    return module.FeatureDistillation(
        loss="mse", teacher_layer_name="teacher_hint", student_layer_name="student_hint"
    )


def run_seed(seed, epochs, student_kind="mlp"):
    """Returns {row name: test accuracy} for one seed."""
    keras.utils.set_random_seed(seed)
    data = digits_split(LABELED_FRACTION, seed)
    x_train, x_labeled, y_labeled = (
        data["x_train"],
        data["x_labeled"],
        data["y_labeled"],
    )
    results = {}

    teacher = mlp([256, 256, 32], "teacher", dropout=0.3)
    teacher.compile(adam(), SPARSE_CE)
    teacher.fit(
        x_train, data["y_train"], epochs=epochs, batch_size=BATCH_SIZE, verbose=0
    )
    results["teacher (all labels)"] = accuracy(teacher, data)

    keras.utils.set_random_seed(seed)
    initial = student(student_kind)  # every student starts from these weights

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
            teacher,
            model,
            keras.distillation.LogitsDistillation(TEMPERATURE, loss=logits_loss),
            student_loss_weight=0.0,
        )
        theirs.compile(adam(), loss=SPARSE_CE)
        results[f"{label}, transfer set"] = accuracy(fit(theirs, x_train), data)

    ours_losses = {
        "kerasdistill, logits, transfer set": [
            kerasdistill.LogitsDistillation(TEMPERATURE)
        ],
        "kerasdistill, logits + features, transfer set": [
            kerasdistill.LogitsDistillation(TEMPERATURE),
            hint_loss(kerasdistill),
        ],
    }
    # No augmentation on digits: the teacher's outputs are computed once.
    cached = kerasdistill.cache_teacher_outputs(
        teacher,
        x_train,
        ours_losses["kerasdistill, logits + features, transfer set"],
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
        teacher,
        model,
        kerasdistill.LogitsDistillation(TEMPERATURE),
        student_loss_weight=0.5,
    )
    ours.compile(adam(), SPARSE_CE)
    results["reference: kerasdistill, logits, all labels (alpha 0.5)"] = accuracy(
        fit(ours, x_train, data["y_train"]), data
    )
    return results, teacher.count_params(), initial.count_params()


TEACHER, PLAIN, SHIFTED = "teacher (all labels)", "plain", "shifts"


def same_labels_seed(seed, epochs, student_kind="mlp"):
    """Returns {row name: (test accuracy, baseline key)} for one seed, every
    model trained on all the training labels."""
    keras.utils.set_random_seed(seed)
    data = digits_split(1.0, seed)
    x, y = data["x_train"], data["y_train"]
    teacher = mlp([256, 256, 32], "teacher", dropout=0.3)
    teacher.compile(adam(), SPARSE_CE)
    teacher.fit(x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    results = {TEACHER: (accuracy(teacher, data), None)}

    keras.utils.set_random_seed(seed)
    initial = student(student_kind)

    def fresh_student():
        model = keras.models.clone_model(initial)
        model.set_weights(initial.get_weights())
        return model

    def fit(model, callbacks=()):
        model.fit(
            x,
            y,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            verbose=0,
            callbacks=list(callbacks),
        )

    for label, augmented in (
        ("student, labels only", False),
        ("student, labels only + shifts (fair baseline)", True),
    ):
        model = fresh_student()
        trained = keras.Sequential([shifts(seed), model]) if augmented else model
        trained.compile(adam(), SPARSE_CE)
        fit(trained)
        results[label] = (accuracy(model, data), SHIFTED if augmented else PLAIN)

    model = fresh_student()
    theirs = keras.distillation.Distiller(
        teacher,
        model,
        keras.distillation.LogitsDistillation(
            TEMPERATURE, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=0.5,
    )
    theirs.compile(adam(), loss=SPARSE_CE)
    fit(theirs)
    results["keras.distillation, KLDivergence()"] = (accuracy(model, data), PLAIN)

    kd = kerasdistill
    rows = [
        ("kerasdistill, KD", kd.LogitsDistillation(TEMPERATURE), False, ()),
        (
            "kerasdistill, KD + consistent shifts",
            kd.LogitsDistillation(TEMPERATURE),
            True,
            (),
        ),
        (
            "  + logit standardization (T 2)",
            kd.LogitsDistillation(2.0, logit_standardization=True),
            True,
            (),
        ),
        (
            "kerasdistill, DKD + consistent shifts",
            kd.DKD(temperature=TEMPERATURE),
            True,
            (),
        ),
        (
            "kerasdistill, CTKD + consistent shifts",
            kd.CTKD(TEMPERATURE),
            True,
            (kd.recipes.curriculum_temperature(10),),
        ),
    ]
    for label, loss, augmented, callbacks in rows:
        model = fresh_student()
        ours = kd.Distiller(
            teacher,
            model,
            loss,
            student_loss_weight=0.5,
            augmentation=shifts(seed) if augmented else None,
        )
        ours.compile(adam(), SPARSE_CE)
        fit(ours, callbacks)
        results[label] = (accuracy(model, data), SHIFTED if augmented else PLAIN)
    return results


def print_table(title, rows, gaps=None):
    width = max(len(name) for name in rows)
    print(title)
    print()
    header = f"{'model':<{width}}  {'accuracy':>17}"
    print(header + ("  gap closed" if gaps else ""))
    for name, values in rows.items():
        line = f"{name:<{width}}  {np.mean(values):>7.4f} +- {np.std(values):.4f}"
        if gaps and name in gaps:
            line += "         n/a" if gaps[name] is None else f"  {gaps[name]:>10.0%}"
        print(line)
    print()


def transfer_set_table(seeds, epochs, student_kind="mlp"):
    rows = {}
    for seed in range(seeds):
        results, teacher_params, student_params = run_seed(seed, epochs, student_kind)
        for name, value in results.items():
            rows.setdefault(name, []).append(value)
    print_table(
        f"Transfer set: digits, {epochs} epochs, temperature {TEMPERATURE}, "
        f"teacher {teacher_params:,} params, {student_kind} student "
        f"{student_params:,} params; "
        f"test accuracy after the last epoch, mean +- std over {seeds} seeds",
        rows,
    )


def same_labels_table(seeds, epochs, student_kind="mlp"):
    rows, baselines = {}, {}
    for seed in range(seeds):
        results = same_labels_seed(seed, epochs, student_kind)
        for name, (value, baseline) in results.items():
            rows.setdefault(name, []).append(value)
            baselines[name] = baseline
    teacher = np.mean(rows[TEACHER])
    reference = {
        PLAIN: np.mean(rows["student, labels only"]),
        SHIFTED: np.mean(rows["student, labels only + shifts (fair baseline)"]),
    }
    # No gap to close where the teacher is not better than the baseline.
    gaps = {
        name: (np.mean(values) - reference[baselines[name]])
        / (teacher - reference[baselines[name]])
        if teacher - reference[baselines[name]] > 1e-3
        else None
        for name, values in rows.items()
        if baselines[name] is not None and "labels only" not in name
    }
    print_table(
        f"Same labels: digits, all {len(digits_split(1.0)['x_train']):,} training "
        f"labels, {student_kind} student ({student(student_kind).count_params():,} "
        f"params), {epochs} epochs, alpha 0.5, temperature {TEMPERATURE}; test "
        f"accuracy after the last epoch, mean +- std over {seeds} seeds; gap "
        "closed against the label-only student with the same augmentation",
        rows,
        gaps,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--epochs", type=int, default=40, help="epochs of the transfer-set table"
    )
    parser.add_argument("--same-labels-epochs", type=int, default=100)
    parser.add_argument(
        "--table", choices=("both", "transfer", "same-labels"), default="both"
    )
    parser.add_argument(
        "--student",
        choices=sorted(STUDENTS),
        default="mlp",
        help="the student of both tables: the MLP (32 hidden units) or a "
        "small CNN (8 filters of 3x3, then 32 units)",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}")
    print()
    if args.table in ("both", "transfer"):
        transfer_set_table(args.seeds, args.epochs, args.student)
    if args.table in ("both", "same-labels"):
        same_labels_table(args.seeds, args.same_labels_epochs, args.student)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
