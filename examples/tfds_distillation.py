"""Hinton distillation on a tensorflow-datasets image data set.

A CNN teacher -> a 32-unit MLP student on the pixels, on MNIST, CIFAR-10 or
Fashion-MNIST loaded with TFDS, compared with the same student trained on the
labels alone. The splits go through one tf.data pipeline
(`kerasdistill.tfds_data.prepare`: float32 pixels in [0, 1], shuffle, batch,
prefetch) that feeds the teacher and the student alike.

Run: `python examples/tfds_distillation.py --dataset mnist [--data-dir DIR]
[--teacher teacher.keras] [--epochs 5]`. The data set must be on disk
(`tfds build mnist --data_dir DIR` on a machine with internet) or
`--download` given; otherwise the script stops at once and says how to
prepare it. With `--teacher PATH`, a teacher saved there is loaded, and a
teacher trained here is saved there.
"""

import argparse
import os
import sys

import keras

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def cnn(input_shape, classes, name):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(classes),
        ],
        name=name,
    )


def mlp(input_shape, classes, name, width=32):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(classes),
        ],
        name=name,
    )


def accuracy(model, batches):
    metric = keras.metrics.SparseCategoricalAccuracy()
    for images, labels in batches:
        metric.update_state(labels, model(images, training=False))
    return float(metric.result())


def teacher_for(args, train, input_shape, classes):
    """Loads the teacher from `args.teacher`, or trains (and saves) one."""
    if args.teacher and os.path.exists(args.teacher):
        print(f"Loaded the teacher from {args.teacher}")
        return keras.saving.load_model(args.teacher)
    teacher = cnn(input_shape, classes, "teacher")
    teacher.compile("adam", SPARSE_CE, metrics=["accuracy"])
    teacher.fit(train, epochs=args.epochs, verbose=args.verbose)
    if args.teacher:
        teacher.save(args.teacher)
        print(f"Saved the teacher to {args.teacher}")
    return teacher


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", default="mnist", choices=("mnist", "cifar10", "fashion_mnist")
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the data set when it is not on disk",
    )
    parser.add_argument(
        "--teacher",
        default=None,
        help="a .keras file: loaded when it exists, else written",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    try:
        train, info = kd.tfds_data.load(
            args.dataset, "train", data_dir=args.data_dir, download=args.download
        )
        test, _ = kd.tfds_data.load(
            args.dataset, "test", data_dir=args.data_dir, download=args.download
        )
    except FileNotFoundError as error:
        sys.exit(str(error))
    input_shape = info.features["image"].shape
    classes = info.features["label"].num_classes
    train = kd.tfds_data.prepare(train, args.batch_size, shuffle=10_000, seed=args.seed)
    test = kd.tfds_data.prepare(test, args.batch_size)

    teacher = teacher_for(args, train, input_shape, classes)

    baseline = mlp(input_shape, classes, "baseline")
    baseline.compile("adam", SPARSE_CE, metrics=["accuracy"])
    baseline.fit(train, epochs=args.epochs, verbose=args.verbose)

    keras.utils.set_random_seed(args.seed)
    distiller = kd.Distiller(
        teacher,
        mlp(input_shape, classes, "student"),
        kd.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.1,
    )
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    distiller.fit(train, epochs=args.epochs, validation_data=test, verbose=args.verbose)

    print(f"\n{args.dataset}: test accuracy after {args.epochs} epochs")
    print(f"{'model':<22}{'params':>10}{'test accuracy':>15}")
    for name, model in [
        ("teacher", teacher),
        ("student, labels only", baseline),
        ("student, distilled", distiller.student),
    ]:
        print(f"{name:<22}{model.count_params():>10,}{accuracy(model, test):>15.4f}")


if __name__ == "__main__":
    main()
