"""TensorFlow Datasets (TFDS) input for distillation: load a split without
surprise downloads, and turn it into the batches a `Distiller` takes.

`tensorflow_datasets` is an optional dependency (the `datasets` extra,
`pip install "kerasdistill[datasets]"`); it is imported when a function here
is called, so `import kerasdistill` works without it.

The teacher and the student of a `Distiller` see the same inputs, so their
input preprocessing lives in one place: the pipeline that `prepare` builds.

TFDS is TensorFlow by nature, and TensorFlow is imported when a function
here is called, not with `kerasdistill`. The `tf.data.Dataset`s it gives
feed `fit()` under every Keras backend (TensorFlow, JAX, PyTorch).
"""

import difflib

import numpy as np

from kerasdistill import checks

# Where TFDS keeps data set files and metadata: a download is tried only when
# this answers, so that an offline machine stops at once instead of retrying.
ONLINE_PROBE_URL = "https://storage.googleapis.com"


def load(name, split, data_dir=None, download=False, as_supervised=True):
    """Loads a TFDS split, failing at once when it is not on disk.

    With `download=False` (the default) nothing is fetched: a data set that
    is not prepared under `data_dir` raises a `FileNotFoundError` naming the
    data set, the folder looked in and how to prepare it, before any
    network access. With `download=True` it is downloaded and prepared, if
    `ONLINE_PROBE_URL` answers within 5 s; otherwise the same error says so
    (TFDS itself would retry each file for minutes).

    Args:
        name: A TFDS name, e.g. `"mnist"`, `"cifar10"`, `"fashion_mnist"`.
        split: A split, e.g. `"train"`, `"test"`, `"train[:10%]"`.
        data_dir: The TFDS data folder. Defaults to TFDS's own
            (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        download: Whether to download and prepare the data set when it is
            not on disk.
        as_supervised: Yield `(image, label)` tuples; `False` yields the
            feature dicts (`prepare` accepts both).

    Returns:
        `(dataset, info)`: an unbatched `tf.data.Dataset` and the data set's
        `tfds.core.DatasetInfo`.

    Raises:
        FileNotFoundError: The data set is not prepared, and `download` is
            `False` or the machine is offline.
        ValueError: `name` is not a TFDS data set.

    Example:

    ```python
    train, info = kerasdistill.tfds_data.load("mnist", "train")
    classes = info.features["label"].num_classes
    ```
    """
    tfds = _import_tfds()
    options = dict(
        split=split, data_dir=data_dir, as_supervised=as_supervised, with_info=True
    )
    try:
        return tfds.load(name, download=False, **options)
    except tfds.core.registered.DatasetNotFoundError as error:
        close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Expected a tensorflow_datasets data set name. Received: "
            f"name={name!r}, which TFDS does not know.{hint} See "
            "https://www.tensorflow.org/datasets/catalog/overview."
        ) from error
    except AssertionError as error:  # TFDS's "could not find data in <data_dir>"
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise ValueError(
                f"Expected tensorflow_datasets to read the prepared data set "
                f"'{name}' (version {builder.version}) from "
                f"{builder.data_dir}, split={split!r}. Received this "
                f"failure from TFDS instead: {error or type(error).__name__}. "
                "Check the split name (see info.splits of tfds.builder"
                f"({name!r}).info), or rebuild the data set: `tfds build "
                f"{name} --data_dir {data_dir or builder.data_dir_root} "
                "--overwrite`."
            ) from error
    if not download:
        raise FileNotFoundError(_not_on_disk(name, builder, "downloading is off"))
    offline = _connection_error(ONLINE_PROBE_URL)
    if offline:
        raise FileNotFoundError(
            _not_on_disk(
                name,
                builder,
                f"it cannot be downloaded: no connection to {ONLINE_PROBE_URL} "
                f"({offline})",
            )
        )
    return tfds.load(name, download=True, **options)


def prepare(
    dataset,
    batch_size=128,
    labels=True,
    rescale=1.0 / 255.0,
    shuffle=None,
    seed=None,
    image_key="image",
    label_key="label",
):
    """Batches a TFDS split for `fit`: float32 images, optional labels.

    Accepts `(image, label)` tuples (`as_supervised=True`), feature dicts
    (their `image_key` and `label_key` are taken) or images alone. Images
    are cast to float32 and multiplied by `rescale`; the result is shuffled
    (when asked), batched and prefetched.

    Args:
        dataset: An unbatched `tf.data.Dataset` of a TFDS split.
        batch_size: Examples per batch.
        labels: Keep the labels (`(image, label)` batches). `False` yields
            images alone: a transfer set on which a `Distiller` trains from
            the teacher's outputs only.
        rescale: Factor applied to the images (`1/255` maps 8-bit pixels
            to [0, 1]), or `None` to keep their values.
        shuffle: Shuffle buffer size, or `None` not to shuffle.
        seed: Shuffle seed.
        image_key: Key of the image in a feature dict.
        label_key: Key of the label in a feature dict.

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Example:

    ```python
    train, _ = kerasdistill.tfds_data.load("mnist", "train")
    batches = kerasdistill.tfds_data.prepare(train, 128, shuffle=10_000)
    distiller.fit(batches, epochs=5)
    ```
    """
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset (e.g. from "
            f"kerasdistill.tfds_data.load). Received: {type(dataset).__name__}"
        )
    checks.check_positive_int(batch_size, "batch_size")
    if shuffle is not None:
        checks.check_positive_int(shuffle, "shuffle")
    if rescale is not None:
        checks.check_positive(rescale, "rescale")
    select = _selector(dataset.element_spec, labels, image_key, label_key)

    def preprocess(*element):
        image, label = select(element[0] if len(element) == 1 else element)
        if not (image.dtype.is_integer or image.dtype.is_floating):
            raise TypeError(
                f"Expected numeric images. Received images of dtype "
                f"{image.dtype.name}: prepare() is for image data sets."
            )
        image = tf.cast(image, "float32")
        if rescale is not None:
            image = image * rescale
        return image if label is None else (image, label)

    if shuffle is not None:
        dataset = dataset.shuffle(shuffle, seed=seed)
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def labeled_split(name, labeled_fraction=0.2, seed=0, data_dir=None, download=False):
    """A TFDS image classification set as arrays, with a labeled subset.

    The arrays of `kerasdistill.demo.digits_split`, from the data set's
    `train` and `test` splits: images as float32 in [0, 1], of shape
    `(n, height, width, channels)`. The labeled subset is a seeded random
    `labeled_fraction` of the training split. The whole split is held in
    memory (CIFAR-10: about 0.7 GB).

    Args:
        name: A TFDS image classification data set with `image` and `label`
            features and `train` and `test` splits.
        labeled_fraction: Fraction of the training split in the labeled
            subset, in (0, 1].
        seed: Seed of the labeled subset's draw.
        data_dir: The TFDS data folder (see `load`).
        download: Whether to download the data set when it is not on disk.

    Returns:
        A dict with `x_train`, `y_train`, `x_labeled`, `y_labeled`,
        `x_test`, `y_test` and `classes` (the number of classes).

    Example:

    ```python
    data = kerasdistill.tfds_data.labeled_split("mnist", labeled_fraction=0.1)
    results = kerasdistill.demo.run_demo(epochs=5, data=data)
    ```
    """
    checks.check_positive(labeled_fraction, "labeled_fraction")
    checks.check_unit_interval(labeled_fraction, "labeled_fraction")
    arrays = {}
    for split in ("train", "test"):
        dataset, info = load(
            name, split, data_dir=data_dir, download=download, as_supervised=False
        )
        images, labels = [], []
        for x, y in prepare(dataset, batch_size=1024).as_numpy_iterator():
            images.append(x)
            labels.append(y)
        arrays[f"x_{split}"] = np.concatenate(images)
        arrays[f"y_{split}"] = np.concatenate(labels)
    order = np.random.default_rng(seed).permutation(len(arrays["x_train"]))
    labeled = order[: max(1, int(round(labeled_fraction * len(order))))]
    arrays["x_labeled"] = arrays["x_train"][labeled]
    arrays["y_labeled"] = arrays["y_train"][labeled]
    arrays["classes"] = info.features["label"].num_classes
    return arrays


def _selector(spec, labels, image_key, label_key):
    """Returns `element -> (image, label or None)` for the element spec."""
    import tensorflow as tf

    if isinstance(spec, dict):
        for key in (image_key, label_key) if labels else (image_key,):
            if key not in spec:
                raise ValueError(
                    f"Expected the feature dicts to have a '{key}' feature. "
                    f"Received features {sorted(spec)}. Pass "
                    "image_key=/label_key= to name them."
                )
        return lambda f: (f[image_key], f[label_key] if labels else None)
    if isinstance(spec, tuple) and len(spec) == 2:
        return lambda e: (e[0], e[1] if labels else None)
    if isinstance(spec, tf.TensorSpec):
        if not labels:
            return lambda image: (image, None)
        raise ValueError(
            f"Expected (image, label) tuples or feature dicts with "
            f"labels=True. Received elements of {spec} alone. Pass "
            "labels=False for images without labels, or load the split with "
            "as_supervised=True."
        )
    raise ValueError(
        "Expected a dataset of (image, label) tuples (tfds.load(..., "
        "as_supervised=True)), of feature dicts or of images alone. "
        f"Received elements of {spec}."
    )


def _not_on_disk(name, builder, reason):
    return (
        f"The tensorflow_datasets data set '{name}' (version "
        f"{builder.version}) is not on disk (looked in {builder.data_dir}) "
        f"and {reason}. Prepare it on a machine with internet: `tfds build "
        f"{name} --data_dir {builder.data_dir_root}` (then copy that folder "
        "here if this machine is offline) and point `data_dir` (--data-dir) "
        "at the folder that holds it, or pass download=True (--download) "
        "where there is internet."
    )


def _connection_error(url):
    """Returns why `url` does not answer within 5 s, or `None`."""
    import requests  # A dependency of tensorflow-datasets.

    try:
        requests.head(url, timeout=5.0)
    except requests.RequestException as error:
        return type(error).__name__
    return None


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "kerasdistill.tfds_data needs tensorflow-datasets. Install it "
            'with `pip install "kerasdistill[datasets]"` (or `pip install '
            "tensorflow-datasets`)."
        ) from error
    return tfds
