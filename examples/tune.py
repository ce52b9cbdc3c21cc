"""Search alpha and temperature of a distillation with KerasTuner.

One teacher is trained once and shared by every trial; each trial distills
a fresh 32-unit student on scikit-learn's digits and is ranked by the
student's validation accuracy. The trial checkpoints hold the student side
only: the script prints their size next to what a checkpoint with the
teacher would take.

Run: python examples/tune.py [--tuner random|bayesian|hyperband]
         [--trials 8] [--epochs 20] [--directory DIR]
(about a minute on 2 CPU cores; Hyperband ignores --trials and runs about
20 trials of 2 to 20 epochs.)
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kerasdistill  # noqa: E402


def mlp(widths, name):
    inputs = keras.Input((64,), name="pixels")
    x = inputs
    for i, width in enumerate(widths):
        x = keras.layers.Dense(width, activation="relu", name=f"{name}_{i}")(x)
    return keras.Model(
        inputs, keras.layers.Dense(10, name=f"{name}_logits")(x), name=name
    )


def make_tuner(kind, hypermodel, trials, epochs, directory):
    common = {
        "objective": "val_accuracy",
        "seed": 0,
        "directory": directory,
        "project_name": f"digits_{kind}",
        "overwrite": True,
    }
    if kind == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=trials, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(
            hypermodel, max_trials=trials, num_initial_points=min(3, trials), **common
        )
    return keras_tuner.Hyperband(hypermodel, max_epochs=epochs, factor=3, **common)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tuner", choices=["random", "bayesian", "hyperband"], default="random"
    )
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--directory", default=None, help="tuner directory (default: a temporary one)"
    )
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=0.25, random_state=0, stratify=y_train
    )

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = mlp([256, 256], "teacher")
    teacher.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    print(
        f"teacher test accuracy: {teacher.evaluate(x_test, y_test, verbose=0)[1]:.4f}"
    )

    hypermodel = kerasdistill.DistillerHyperModel(
        teacher,
        mlp([32], "student"),  # Cloned with fresh weights for each trial.
        alpha=(0.05, 0.95),
        temperature={"min_value": 1.0, "max_value": 16.0, "sampling": "log"},
        loss=loss,
        metrics=["accuracy"],
    )
    directory = args.directory or tempfile.mkdtemp(prefix="kerasdistill-tune-")
    tuner = make_tuner(args.tuner, hypermodel, args.trials, args.epochs, directory)
    tuner.search(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=64,
        verbose=0,
    )

    print(f"\n{'trial':<6} {'alpha':>6} {'T':>6} {'val_accuracy':>13}")
    for trial in tuner.oracle.get_best_trials(len(tuner.oracle.trials)):
        values = trial.hyperparameters.values
        print(
            f"{trial.trial_id:<6} {values['alpha']:>6.3f} "
            f"{values['temperature']:>6.2f} {trial.score:>13.4f}"
        )

    best = tuner.get_best_models(1)[0]
    best_trial = tuner.oracle.get_best_trials(1)[0]
    test = best.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print(
        f"\nbest: alpha={best_trial.hyperparameters.values['alpha']:.3f}, "
        f"T={best_trial.hyperparameters.values['temperature']:.2f}; "
        f"student test accuracy {test['accuracy']:.4f}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        student_side = os.path.join(tmp, "trial.weights.h5")
        best.save_weights(student_side)  # What the tuner writes per trial.
        with_teacher = os.path.join(tmp, "with_teacher.weights.h5")
        keras.saving.save_weights(best, with_teacher)  # A plain Model's.
        size = os.path.getsize(student_side)
        full_size = os.path.getsize(with_teacher)
    trials = len(tuner.oracle.trials)
    print(
        f"trial checkpoint (student side): {size / 1024:.1f} KiB; with the "
        f"teacher it would be {full_size / 1024:.1f} KiB "
        f"({trials} trials: {trials * size / 1024:.0f} KiB instead of "
        f"{trials * full_size / 1024:.0f} KiB)"
    )
    print(
        f"student parameters: {best.student.count_params()}, "
        f"teacher parameters: {teacher.count_params()}"
    )
    print(f"tuner directory: {directory}")


if __name__ == "__main__":
    main()
