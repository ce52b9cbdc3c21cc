"""Self-distillation against plain training, on bundled data.

Same architecture, same epochs, same optimizer for every mode; the test
metric of the last epoch, mean +- std over seeds (the seed sets the weights'
initialization and the batch order; the train/test split is fixed).

- diabetes (scikit-learn, 442 patients, 10 features): test RMSE, lower is
  better;
- friedman1 (scikit-learn's make_friedman1, 400 training points, noise std
  1.0): test RMSE (the noise floor is 1.0);
- digits (scikit-learn, 8x8 images, 10 classes, 1,000 training images): test
  accuracy, higher is better.

Modes: plain; snapshot (PS-KD targets from last epoch's model); ema (mean
teacher); ema+hidden (mean teacher plus the last hidden layer pulled toward
the teacher's); born-again (3 generations, the last one reported); deep
supervision (a head on the first hidden layer, BYOT); mutual (two copies
trained together, DML; the first one reported). The settings are fixed
before running and the same on every data set (no tuning on the test set).

Run: `python benchmarks/self_distillation.py` (about 8 minutes on 2 CPU
cores; `--seeds 1 --epochs-scale 0.1` for a smoke run).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.datasets import make_friedman1  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import kerasdistill as kd  # noqa: E402

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
MODES = (
    "plain",
    "snapshot (PS-KD)",
    "ema (mean teacher)",
    "ema+hidden",
    "born-again (gen 2)",
    "deep supervision",
    "mutual (DML)",
)


def load(name):
    """Returns (x_train, y_train, x_test, y_test, task, epochs, scale)."""
    if name == "diabetes":
        x, y = load_diabetes(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.3, random_state=0
        )
        task, epochs = "regression", 60
    elif name == "friedman1":
        x, y = make_friedman1(n_samples=1400, noise=1.0, random_state=0)
        x_train, y_train, x_test, y_test = x[:400], y[:400], x[400:], y[400:]
        task, epochs = "regression", 60
    else:
        x, y = load_digits(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, train_size=1000, random_state=0, stratify=y
        )
        task, epochs = "classification", 20
    scaler = StandardScaler().fit(x_train)
    x_train = scaler.transform(x_train).astype("float32")
    x_test = scaler.transform(x_test).astype("float32")
    scale = 1.0
    if task == "regression":  # train on standardized targets, score in units
        mean, scale = y_train.mean(), y_train.std()
        y_train = ((y_train - mean) / scale).astype("float32")
        y_test = ((y_test - mean) / scale).astype("float32")
    return x_train, y_train, x_test, y_test, task, epochs, scale


def mlp(features, outputs, name="mlp"):
    inputs = keras.Input((features,))
    hidden = keras.layers.Dense(32, activation="relu", name="hidden1")(inputs)
    hidden = keras.layers.Dense(32, activation="relu", name="hidden2")(hidden)
    return keras.Model(
        inputs, keras.layers.Dense(outputs, name="out")(hidden), name=name
    )


def losses_for(task):
    """(supervised loss, output distillation loss at T=3, at T=1)."""
    if task == "classification":
        return (
            SPARSE_CE,
            kd.LogitsDistillation(3.0),
            kd.LogitsDistillation(1.0, loss="soft_cross_entropy"),
        )
    return "mse", kd.RegressionDistillation("mse"), kd.RegressionDistillation("mse")


def score(model, x, y, task, scale):
    predictions = np.asarray(model(x, training=False))
    if task == "classification":
        return float(np.mean(predictions.argmax(-1) == y))
    return float(np.sqrt(np.mean((predictions[:, 0] - y) ** 2)) * scale)


def run(mode, data, seed, epochs_scale):
    x, y, x_test, y_test, task, epochs, scale = data
    epochs = max(1, round(epochs * epochs_scale))
    outputs = 10 if task == "classification" else 1
    supervised, soft, hard = losses_for(task)
    # A tf.data pipeline: far less per-epoch overhead than numpy arrays.
    train = (
        tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(32)
    )
    fit = {"epochs": epochs, "verbose": 0, "shuffle": False}  # shuffled above

    def build(name="mlp"):
        model = mlp(x.shape[1], outputs, name)
        model.compile(keras.optimizers.Adam(1e-3), supervised)
        return model

    keras.utils.set_random_seed(seed)
    model = build()
    if mode == "plain":
        model.fit(train, **fit)
    elif mode == "snapshot (PS-KD)":
        trainer = kd.SelfDistiller(
            model,
            "snapshot",
            hard,
            progressive_alpha=0.8 if task == "classification" else 0.5,
        )
        trainer.compile(keras.optimizers.Adam(1e-3), supervised)
        trainer.fit(train, **fit)
    elif mode in ("ema (mean teacher)", "ema+hidden"):
        losses = [soft]
        if mode == "ema+hidden":
            losses.append(kd.FeatureDistillation("mse", "hidden2", "hidden2"))
        trainer = kd.SelfDistiller(model, "ema", losses, ema_decay=0.99)
        trainer.compile(keras.optimizers.Adam(1e-3), supervised)
        trainer.fit(train, **fit)
    elif mode == "born-again (gen 2)":
        # The scores are not used to pick a generation: the last is reported.
        result = kd.born_again(
            lambda: build(), train, train, hard, generations=3, **fit
        )
        model = result.models[-1]
    elif mode == "deep supervision":
        trainer = kd.DeepSupervision(model, ["hidden1"], soft)
        trainer.compile(keras.optimizers.Adam(1e-3), supervised)
        trainer.fit(train, **fit)
    elif mode == "mutual (DML)":
        trainer = kd.MutualLearning([model, mlp(x.shape[1], outputs, "peer")], hard)
        trainer.compile(keras.optimizers.Adam(1e-3), supervised)
        trainer.fit(train, **fit)
    return score(model, x_test, y_test, task, scale)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument(
        "--datasets", nargs="+", default=["diabetes", "friedman1", "digits"]
    )
    args = parser.parse_args(argv)
    start = time.time()
    print(f"seeds 0..{args.seeds - 1}, MLP 32-32, Adam(1e-3), batch 32, last epoch\n")
    for name in args.datasets:
        data = load(name)
        task, epochs = data[4], max(1, round(data[5] * args.epochs_scale))
        metric = "test accuracy" if task == "classification" else "test RMSE"
        results = {
            mode: [
                run(mode, data, seed, args.epochs_scale) for seed in range(args.seeds)
            ]
            for mode in MODES
        }
        plain = np.mean(results["plain"])
        better = "higher" if task == "classification" else "lower"
        print(
            f"{name} ({len(data[0])} train / {len(data[2])} test, {epochs} epochs): "
            f"{metric}, {better} is better"
        )
        print(f"  {'mode':<22}{'mean +- std':>18}{'vs plain':>10}")
        for mode, values in results.items():
            delta = "" if mode == "plain" else f"{np.mean(values) - plain:+.4f}"
            print(
                f"  {mode:<22}{np.mean(values):>10.4f} +- {np.std(values):.4f}{delta:>10}"
            )
        print()
    print(f"total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
