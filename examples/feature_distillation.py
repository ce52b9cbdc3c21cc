"""Intermediate-feature distillation on scikit-learn's digits (8x8 images).

A CNN teacher (32 -> 64 channels) teaches a narrower CNN student (8 -> 16
channels). Three students of the same architecture and initial weights are
trained on the same labels: labels only, logits-only KD (Hinton), and
logits + FitNets hints on both blocks (weight 0.1 each), each hint through
an automatic 1x1-convolution adapter since the channels differ.
Run: `python examples/feature_distillation.py`.
"""

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def cnn(widths, name):
    """Conv blocks `block1_out` (4x4) and `block2_out` (2x2), then logits."""
    inputs = keras.Input((8, 8, 1))
    h = inputs
    for k, width in enumerate(widths, 1):
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D(name=f"block{k}_out")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h), name=name)


def load(seed):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 8, 8, 1).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def main(seed=0, epochs=20, learning_rate=3e-3):
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load(seed)

    def adam():
        return keras.optimizers.Adam(learning_rate)

    teacher = cnn([32, 64], "teacher")
    teacher.compile(adam(), SPARSE_CE)
    teacher.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

    initial = cnn([8, 16], "student").get_weights()

    def student(name):
        model = cnn([8, 16], name)
        model.set_weights(initial)  # the same start for every student
        return model

    label_only = student("labels_only")
    label_only.compile(adam(), SPARSE_CE)
    label_only.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

    def distill(name, losses, weights):
        keras.utils.set_random_seed(seed)
        distiller = kd.Distiller(
            teacher,
            student(name),
            losses,
            distillation_loss_weights=weights,
            student_loss_weight=0.3,
        )
        distiller.compile(adam(), SPARSE_CE)
        distiller.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
        return distiller

    logits_kd = distill("logits_kd", [kd.LogitsDistillation(temperature=4.0)], [1.0])
    hints = [
        kd.FeatureDistillation("mse", "block1_out", "block1_out"),
        kd.FeatureDistillation("mse", "block2_out", "block2_out"),
    ]
    features_kd = distill(
        "features_kd", [kd.LogitsDistillation(temperature=4.0), *hints], [1.0, 0.1, 0.1]
    )
    adapters = [hint.adapter for hint in features_kd.distillation_losses[1:]]

    rows = [
        ("teacher", teacher),
        ("student, labels only", label_only),
        ("student, logits KD", logits_kd.student),
        ("student, logits + features KD", features_kd.student),
    ]
    print(f"{'model':<40}{'params':>8}{'test accuracy':>15}")
    for name, model in rows:
        print(
            f"{name:<40}{model.count_params():>8,}{accuracy(model, x_test, y_test):>15.4f}"
        )
    print(
        "adapters (trained with the student, not part of it): "
        + ", ".join(
            f"{' + '.join(type(layer).__name__ for layer in a.layers)} "
            f"({a.count_params()} params)"
            for a in adapters
        )
    )


if __name__ == "__main__":
    main()
