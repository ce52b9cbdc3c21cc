"""Distil a digits classifier and write the distillation report.

A wide MLP teacher and a small MLP student on scikit-learn's bundled
`load_digits`; a baseline of the student's architecture is trained on the
labels alone. `alpha` is annealed from 0.9 to 0.1 by a callback, so the
training plot shows it on its second axis. The report (report.md and PNG
plots) is written to the folder given as argument.

    python examples/distillation_report.py [folder]   # default ./kerasdistill-report
"""

import sys

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kerasdistill

EPOCHS = 30


def mlp(width, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def compiled(model):
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main(folder):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    teacher = compiled(mlp(256, seed=0))
    teacher.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
    baseline = compiled(mlp(12, seed=1))
    baseline.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)

    student = mlp(12, seed=1)
    distiller = kerasdistill.Distiller(
        teacher,
        student,
        kerasdistill.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.9,
    )
    compiled(distiller)
    anneal_alpha = kerasdistill.callbacks.AlphaScheduler(
        kerasdistill.schedules.Linear(0.9, 0.1, steps=EPOCHS - 1)
    )
    history = distiller.fit(
        x_train,
        y_train,
        epochs=EPOCHS,
        batch_size=64,
        verbose=0,
        validation_data=(x_test, y_test),
        callbacks=[anneal_alpha],
    )
    figures = kerasdistill.report(
        teacher,
        student,
        (x_test, y_test),
        baseline=baseline,
        history=history,
        path=folder,
    )
    print(kerasdistill.format_report(figures))
    print(f"Report written to {figures['files']['markdown']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "kerasdistill-report")
