"""Self-distillation for regression on Friedman #1 (noise std 1.0).

One MLP architecture, trained four ways on 400 labeled points: on its labels
alone; as its own mean teacher (EMA of its weights, Huber loss to the
teacher's predictions, and its last hidden layer pulled toward the
teacher's); with a snapshot teacher and the teacher-bounded loss (the model
is penalized only where it does worse than last epoch's self); with an
auxiliary head on its first hidden layer (deep supervision). No teacher
model is trained beforehand. Run: `python examples/self_distillation_regression.py`.
"""

import keras
import numpy as np
from sklearn.datasets import make_friedman1

import kerasdistill as kd


def mlp():
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(32, activation="relu", name="hidden1")(inputs)
    hidden = keras.layers.Dense(32, activation="relu", name="hidden2")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))


def rmse(model, x, y):
    return float(np.sqrt(np.mean((model.predict(x, verbose=0)[:, 0] - y) ** 2)))


def main(seed=0, epochs=60):
    x, y = make_friedman1(n_samples=1400, noise=1.0, random_state=seed)
    x, y = x.astype("float32"), y.astype("float32")
    x_train, y_train, x_test, y_test = x[:400], y[:400], x[400:], y[400:]
    fit = {"epochs": epochs, "batch_size": 32, "verbose": 0}
    results = {}

    keras.utils.set_random_seed(seed)
    plain = mlp()
    plain.compile(keras.optimizers.Adam(1e-3), "mse")
    plain.fit(x_train, y_train, **fit)
    results["plain (labels only)"] = plain

    keras.utils.set_random_seed(seed)
    model = mlp()
    mean_teacher = kd.SelfDistiller(
        model,
        teacher="ema",
        ema_decay=0.99,
        distillation_losses=[
            kd.RegressionDistillation("huber"),
            kd.FeatureDistillation("mse", "hidden2", "hidden2"),
        ],
        distillation_loss_weights=[1.0, 0.1],
    )
    mean_teacher.compile(keras.optimizers.Adam(1e-3), "mse")
    mean_teacher.fit(x_train, y_train, **fit)
    results["EMA teacher, huber + hidden"] = model

    keras.utils.set_random_seed(seed)
    model = mlp()
    snapshot = kd.SelfDistiller(
        model,
        teacher="snapshot",
        snapshot_interval=5,
        distillation_losses=kd.RegressionDistillation("teacher_bounded", margin=0.1),
    )
    snapshot.compile(keras.optimizers.Adam(1e-3), "mse")
    snapshot.fit(x_train, y_train, **fit)
    results["snapshot, teacher-bounded"] = model

    keras.utils.set_random_seed(seed)
    model = mlp()
    deep = kd.DeepSupervision(model, ["hidden1"], kd.RegressionDistillation("mse"))
    deep.compile(keras.optimizers.Adam(1e-3), "mse")
    deep.fit(x_train, y_train, **fit)
    results["deep supervision (hidden1)"] = deep.model

    print(f"{'model (same MLP, 400 labels)':<32}{'test RMSE':>10}")
    for name, trained in results.items():
        print(f"{name:<32}{rmse(trained, x_test, y_test):>10.3f}")
    print("noise floor (label noise std): 1.000")


if __name__ == "__main__":
    main()
