"""Regression distillation on Friedman #1 (scikit-learn's generator).

An MLP teacher trained on 2,000 labeled points -> an 8-unit student that has
labels for 200 of them; the teacher's predictions on all 2,000 inputs are its
transfer set. Compared with the same student trained on its 200 labels.
Run: `python examples/regression.py`.
"""

import keras
import numpy as np
from sklearn.datasets import make_friedman1

import kerasdistill as kd


def mlp(widths, name):
    inputs = keras.Input((10,))
    hidden = inputs
    for width in widths:
        hidden = keras.layers.Dense(width, activation="relu")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden), name=name)


def rmse(model, x, y):
    return float(np.sqrt(np.mean((np.asarray(model(x))[:, 0] - y) ** 2)))


def main(seed=0, epochs=100, labeled=200):
    keras.utils.set_random_seed(seed)
    x, y = make_friedman1(n_samples=3000, noise=1.0, random_state=seed)
    x, y = x.astype("float32"), y.astype("float32")
    x_train, y_train, x_test, y_test = x[:2000], y[:2000], x[2000:], y[2000:]

    teacher = mlp([128, 128], "teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), "mse")
    teacher.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)

    baseline = mlp([8], "baseline")
    baseline.compile(keras.optimizers.Adam(3e-3), "mse")
    baseline.fit(
        x_train[:labeled], y_train[:labeled], epochs=epochs, batch_size=32, verbose=0
    )

    keras.utils.set_random_seed(seed)
    distiller = kd.Distiller(
        teacher, mlp([8], "student"), kd.RegressionDistillation("mse")
    )
    distiller.compile(keras.optimizers.Adam(3e-3), "mse")
    distiller.fit(x_train, epochs=epochs, batch_size=64, verbose=0)  # no labels

    print(f"{'model':<30}{'params':>8}{'test RMSE':>11}")
    for name, model in [
        ("teacher (2000 labels)", teacher),
        (f"student, labels only ({labeled})", baseline),
        ("student, distilled", distiller.student),
    ]:
        print(
            f"{name:<30}{model.count_params():>8,}{rmse(model, x_test, y_test):>11.3f}"
        )
    print("noise floor (label noise std): 1.000")


if __name__ == "__main__":
    main()
