"""Self-distillation for classification on scikit-learn's digits.

One MLP architecture trained on its labels alone, with PS-KD (last epoch's
model softens the targets, more and more), as born-again generations
(each learns from the previous one; stops when the validation accuracy stops
improving), and with deep mutual learning (two copies teach each other).
Run: `python examples/self_distillation_classification.py`.
"""

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(name="mlp"):
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden), name=name)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def main(seed=0, epochs=30):
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, train_size=1000, random_state=seed, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=200, random_state=seed, stratify=y_train
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (
        scaler.transform(a).astype("float32") for a in (x_train, x_val, x_test)
    )
    fit = {"epochs": epochs, "batch_size": 32, "verbose": 0}
    results = {}

    keras.utils.set_random_seed(seed)
    plain = mlp()
    plain.compile("adam", SPARSE_CE)
    plain.fit(x_train, y_train, **fit)
    results["plain (labels only)"] = plain

    keras.utils.set_random_seed(seed)
    model = mlp()
    pskd = kd.SelfDistiller(
        model,
        teacher="snapshot",
        distillation_losses=kd.LogitsDistillation(1.0, loss="soft_cross_entropy"),
        progressive_alpha=0.8,
    )
    pskd.compile("adam", SPARSE_CE)
    pskd.fit(x_train, y_train, **fit)
    results["PS-KD (snapshot teacher)"] = model

    def build():
        model = mlp()
        model.compile("adam", SPARSE_CE, metrics=["accuracy"])
        return model

    keras.utils.set_random_seed(seed)
    generations = kd.born_again(
        build,
        (x_train, y_train),
        (x_val, y_val),
        kd.LogitsDistillation(temperature=1.0),
        generations=3,
        monitor="accuracy",
        patience=1,
        **fit,
    )
    for k, model in enumerate(generations.models):
        results[f"born-again generation {k}"] = model
    print(
        "born-again validation accuracy per generation:",
        ", ".join(f"{s:.4f}" for s in generations.scores),
        f"(best: generation {generations.best_index})",
    )

    keras.utils.set_random_seed(seed)
    mutual = kd.MutualLearning(
        [mlp("net_a"), mlp("net_b")], kd.LogitsDistillation(temperature=1.0)
    )
    mutual.compile("adam", SPARSE_CE)
    mutual.fit(x_train, y_train, **fit)
    results["mutual learning (net_a)"] = mutual.models[0]

    print(f"{'model (same MLP, 800 labels)':<32}{'test accuracy':>14}")
    for name, trained in results.items():
        print(f"{name:<32}{accuracy(trained, x_test, y_test):>14.4f}")


if __name__ == "__main__":
    main()
