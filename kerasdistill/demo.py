"""The demo: distill a small MLP from a large one on scikit-learn's bundled
digits (or from a small CNN on a TFDS image data set), and compare it with
the same MLP trained on labels alone.

The setting is the one where distillation pays: the teacher was trained on
every label, the student's owner has labels for only a fraction of the
training inputs, and the teacher's soft targets on all of them (a transfer
set without labels) replace the missing labels.
"""

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kerasdistill

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def digits_split(labeled_fraction=0.2, seed=0):
    """Scaled digits: a training split, its labeled subset, a test split.

    Returns:
        A dict with `x_train`, `y_train`, `x_labeled`, `y_labeled`, `x_test`,
        `y_test` (float32 inputs in [0, 1], int labels) and `classes` (10).

    Example:

    ```python
    data = kerasdistill.demo.digits_split(labeled_fraction=0.2)
    ```
    """
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    labeled = int(round(labeled_fraction * len(x_train)))
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_labeled": x_train[:labeled],
        "y_labeled": y_train[:labeled],
        "x_test": x_test,
        "y_test": y_test,
        "classes": 10,
    }


def mlp(hidden_widths, name, dropout=0.0, features=64, classes=10):
    """A ReLU MLP with logits outputs and layers named `{name}_dense{i}`.

    Example:

    ```python
    student = kerasdistill.demo.mlp([16], name="student")
    ```
    """
    inputs = keras.Input((features,), name=f"{name}_input")
    hidden = inputs
    for i, width in enumerate(hidden_widths):
        hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_dense{i}")(
            hidden
        )
        if dropout:
            hidden = keras.layers.Dropout(dropout, name=f"{name}_dropout{i}")(hidden)
    outputs = keras.layers.Dense(classes, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def image_classifier(
    input_shape, classes, name, conv_filters=(), dense_widths=(16,), dropout=0.0
):
    """Conv blocks, then a ReLU MLP on the flattened features, then logits.

    Each conv block is a 3x3 ReLU convolution `{name}_conv{i}` and a 2x2
    max-pooling; the dense layers are `{name}_dense{i}`, the outputs
    `{name}_logits`. With no `conv_filters` it is an MLP on the pixels.

    Example:

    ```python
    teacher = kerasdistill.demo.image_classifier(
        (28, 28, 1), 10, "teacher", conv_filters=(32, 64), dense_widths=(128,)
    )
    ```
    """
    inputs = keras.Input(tuple(input_shape), name=f"{name}_input")
    hidden = inputs
    for i, filters in enumerate(conv_filters):
        hidden = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"{name}_conv{i}"
        )(hidden)
        hidden = keras.layers.MaxPooling2D(name=f"{name}_pool{i}")(hidden)
    hidden = keras.layers.Flatten(name=f"{name}_flatten")(hidden)
    for i, width in enumerate(dense_widths):
        hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_dense{i}")(
            hidden
        )
        if dropout:
            hidden = keras.layers.Dropout(dropout, name=f"{name}_dropout{i}")(hidden)
    outputs = keras.layers.Dense(classes, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def run_demo(
    epochs=60,
    labeled_fraction=None,
    temperature=4.0,
    seed=0,
    verbose=1,
    data=None,
):
    """Trains a teacher, a label-only student and a distilled student.

    Args:
        epochs: Epochs of each student (the teacher trains for 2/3 of it).
        labeled_fraction: Fraction of the digits training split the
            student's owner has labels for. Defaults to 0.2. With `data`,
            give the fraction to its loader instead.
        temperature: Temperature of the distillation.
        seed: Random seed (data split and weights).
        verbose: 0: silent; 1: one progress bar per model trained
            (`EpochProgress`); 2: Keras's `fit` line per epoch.
        data: The data, a dict as `digits_split` or
            `kerasdistill.tfds_data.labeled_split` returns. Flat inputs get
            MLPs; images get a small CNN teacher and an MLP student on the
            pixels. Defaults to scikit-learn's digits.

    Returns:
        A dict: the trained `teacher`, `baseline` and `student`, the
        `history` of the distillation and the `data`.

    Example:

    ```python
    results = kerasdistill.demo.run_demo(epochs=5, verbose=0)
    print(kerasdistill.demo.describe(results))
    ```
    """
    if data is None:
        labeled_fraction = 0.2 if labeled_fraction is None else labeled_fraction
        data = digits_split(labeled_fraction, seed)
    elif labeled_fraction is not None:
        raise ValueError(
            "Expected labeled_fraction=None when `data` is given, whose "
            f"labeled subset is already drawn. Received: labeled_fraction="
            f"{labeled_fraction}. Give the fraction to the loader, e.g. "
            "kerasdistill.tfds_data.labeled_split(name, labeled_fraction)."
        )
    keras.utils.set_random_seed(seed)
    teacher = _network(data, "teacher", teacher=True)
    teacher.compile(keras.optimizers.Adam(1e-3), SPARSE_CE, metrics=["accuracy"])
    teacher.fit(
        data["x_train"],
        data["y_train"],
        epochs=max(1, 2 * epochs // 3),
        batch_size=32,
        **_progress(verbose, "teacher, on every training label"),
    )

    baseline = _network(data, "baseline")
    baseline.compile(keras.optimizers.Adam(3e-3), SPARSE_CE, metrics=["accuracy"])
    baseline.fit(
        data["x_labeled"],
        data["y_labeled"],
        epochs=epochs,
        batch_size=32,
        **_progress(verbose, "baseline, the student on the labeled inputs alone"),
    )

    keras.utils.set_random_seed(seed)
    student = _network(data, "student")
    distiller = kerasdistill.Distiller(  # no labels: alpha plays no part
        teacher,
        student,
        kerasdistill.LogitsDistillation(temperature=temperature),
        student_loss_weight=0.0,
    )
    distiller.compile(keras.optimizers.Adam(3e-3), SPARSE_CE, metrics=["accuracy"])
    history = distiller.fit(
        data["x_train"],
        epochs=epochs,
        batch_size=32,
        validation_data=(data["x_test"], data["y_test"]),
        **_progress(verbose, "student, distilled on every training input"),
    )

    return {
        "teacher": teacher,
        "baseline": baseline,
        "student": student,
        "history": history,
        "data": data,
    }


def _progress(verbose, title):
    """The verbosity and callbacks of one `fit()` of the demo."""
    if verbose == 1:
        return {"verbose": 0, "callbacks": [EpochProgress(title)]}
    return {"verbose": verbose}


class EpochProgress(keras.callbacks.Callback):
    """One progress bar over the epochs of a `fit()` (`keras.utils.Progbar`),
    under a title, showing the last epoch's loss and accuracies.

    Args:
        title: The line printed above the bar.

    Example:

    ```python
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, verbose=0,
              callbacks=[kerasdistill.demo.EpochProgress("model")])
    ```
    """

    SHOWN = ("loss", "accuracy", "val_accuracy")

    def __init__(self, title):
        super().__init__()
        self.title = title
        self._bar = None

    def on_train_begin(self, logs=None):
        print(self.title)
        self._bar = keras.utils.Progbar(
            self.params["epochs"], unit_name="epoch", stateless_metrics=()
        )

    def on_epoch_end(self, epoch, logs=None):
        shown = [(key, float(logs[key])) for key in self.SHOWN if key in (logs or {})]
        self._bar.update(epoch + 1, shown)


def _network(data, name, teacher=False):
    """The demo's teacher or student for the data's inputs."""
    shape, classes = data["x_train"].shape[1:], data["classes"]
    dropout = 0.3 if teacher else 0.0
    if len(shape) == 1:
        widths = [256, 256] if teacher else [16]
        return mlp(widths, name, dropout=dropout, features=shape[0], classes=classes)
    return image_classifier(
        shape,
        classes,
        name,
        conv_filters=(32, 64) if teacher else (),
        dense_widths=(128,) if teacher else (16,),
        dropout=dropout,
    )


def describe(results):
    """One line saying what the baseline and the student were trained on.

    Example:

    ```python
    print(kerasdistill.demo.describe(results))
    ```
    """
    data = results["data"]
    return (
        f"baseline: the student's architecture trained on "
        f"{len(data['x_labeled']):,} labeled inputs alone; student: distilled "
        f"from the teacher on all {len(data['x_train']):,} training inputs, "
        "without their labels."
    )


def write_report(results, path):
    """Measures the demo's models on the test split and writes the report.

    Returns:
        The figures of `kerasdistill.report`, with the files it wrote.

    Example:

    ```python
    figures = kerasdistill.demo.write_report(results, "kerasdistill-demo")
    print(kerasdistill.format_report(figures))
    ```
    """
    data = results["data"]
    return kerasdistill.report(
        results["teacher"],
        results["student"],
        (data["x_test"], data["y_test"]),
        baseline=results["baseline"],
        history=results["history"],
        path=path,
    )
