"""Constant vs scheduled temperature and alpha, on scikit-learn's digits.

The same teacher is distilled into the same tiny student twice per seed:
once with a constant temperature (T=4) and alpha (0.5), once with the
progressive temperature (T=10, halved each epoch, floor 1) and alpha moving
from the labels (0.9) to the teacher (0.3). The script prints the test
accuracy of both (mean +- std over seeds, last epoch) and the schedule the
scheduled run logged (read back from its History).

Run:

    python examples/schedules.py            # 3 seeds, 12 epochs
    python examples/schedules.py --seeds 5 --epochs 20
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kerasdistill  # noqa: E402

CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(width, name):
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(width, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden), name=name)


def load():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def distill(teacher, data, epochs, seed, scheduled):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    distiller = kerasdistill.Distiller(
        teacher,
        mlp(6, "student"),
        kerasdistill.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss=CROSS_ENTROPY, metrics=["accuracy"]
    )
    callbacks = []
    if scheduled:
        callbacks = [
            kerasdistill.recipes.progressive_temperature(10.0, 0.5, 1.0),
            kerasdistill.recipes.alpha_ramp(epochs, 0.9, 0.3),
        ]
    history = distiller.fit(
        x_train, y_train, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks
    )
    accuracy = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    return accuracy["accuracy"], history.history


def main(seeds=3, epochs=12):
    data = load()
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(0)
    teacher = mlp(256, "teacher")
    teacher.compile(optimizer="adam", loss=CROSS_ENTROPY, metrics=["accuracy"])
    teacher.fit(x_train, y_train, batch_size=64, epochs=30, verbose=0)
    teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0)[1]
    print(f"teacher (256 hidden units) test accuracy: {teacher_accuracy:.4f}")

    runs = {
        name: [distill(teacher, data, epochs, seed, scheduled) for seed in range(seeds)]
        for name, scheduled in (("constant", False), ("scheduled", True))
    }
    results = {name: [accuracy for accuracy, _ in r] for name, r in runs.items()}
    logged = runs["scheduled"][0][1]
    print(f"student (6 hidden units), {epochs} epochs, {seeds} seeds, last epoch:")
    for name, accuracies in results.items():
        print(
            f"  {name:9s} T and alpha: test accuracy "
            f"{np.mean(accuracies):.4f} +- {np.std(accuracies):.4f}"
        )
    print("schedule logged by the scheduled run, seed 0 (History):")
    print("  epoch  temperature  alpha")
    for epoch, (t, a) in enumerate(zip(logged["temperature"], logged["alpha"])):
        print(f"  {epoch:5d}  {t:11.4g}  {a:5.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    arguments = parser.parse_args()
    main(arguments.seeds, arguments.epochs)
