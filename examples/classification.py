"""Hinton distillation on scikit-learn's breast-cancer data (2 classes).

A wide MLP teacher -> a 4-unit student, compared with the same student
trained on labels alone. Run: `python examples/classification.py`.
"""

import keras
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(widths, name, features):
    inputs = keras.Input((features,))
    hidden = inputs
    for width in widths:
        hidden = keras.layers.Dense(width, activation="relu")(hidden)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden), name=name)


def main(seed=0, epochs=60):
    keras.utils.set_random_seed(seed)
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    x_train = scaler.transform(x_train).astype("float32")
    x_test = scaler.transform(x_test).astype("float32")
    features = x.shape[1]

    teacher = mlp([256, 256], "teacher", features)
    teacher.compile("adam", SPARSE_CE, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

    baseline = mlp([4], "baseline", features)
    baseline.compile("adam", SPARSE_CE, metrics=["accuracy"])
    baseline.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

    keras.utils.set_random_seed(seed)
    distiller = kd.Distiller(
        teacher,
        mlp([4], "student", features),
        kd.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.3,
    )
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

    print(f"{'model':<22}{'params':>8}{'test accuracy':>15}")
    for name, model in [
        ("teacher", teacher),
        ("student, labels only", baseline),
        ("student, distilled", distiller.student),
    ]:
        accuracy = np.mean(np.argmax(model(x_test), -1) == y_test)
        print(f"{name:<22}{model.count_params():>8,}{accuracy:>15.4f}")


if __name__ == "__main__":
    main()
