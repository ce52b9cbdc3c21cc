"""A labeled and an unlabeled set in one `fit()`: the dataset that
interleaves them, with partial labels (`kerasdistill.partial_labels`).

Distillation pays most where the teacher labels inputs that the student has
no labels for. Each batch holds a fixed share of labeled samples, so the
student's loss on the labels and the teacher's targets on every sample
train together, in one `fit()`.
"""

import keras
import numpy as np
from keras import tree

from kerasdistill import checks
from kerasdistill import labels
from kerasdistill.data import input_batches


def labeled_and_unlabeled(
    labeled, unlabeled, labeled_fraction=None, batch_size=32, shuffle=True, seed=None
):
    """A `tf.data.Dataset` of batches mixing a labeled and an unlabeled set.

    Each batch holds `round(labeled_fraction * batch_size)` labeled samples
    (at least one) and unlabeled samples for the rest, in a random order
    within the batch. An epoch passes at least once over each set: the set
    that runs out first starts again, reshuffled. Each element is `(x,
    kerasdistill.partial_labels(y, has_label))` (with sample weights, `(x,
    partial labels, sample_weight)`; the unlabeled samples weigh 1), which
    a `Distiller` trains on with the student loss averaged over the labeled
    samples and the distillation loss over all (see
    `kerasdistill.labels`). It works on every backend (`fit()` takes a
    `tf.data.Dataset` on each), with `cache_teacher_outputs`, sample
    weights, `augmentation=` / `mixing=`, schedules and `tf.distribute`.

    Args:
        labeled: `(x, y)` or `(x, y, sample_weight)`: numpy arrays (or
            anything `numpy.asarray` reads), `x` a dict or list for several
            inputs.
        unlabeled: The inputs without labels, structured as `labeled`'s
            `x`.
        labeled_fraction: The share of labeled samples in a batch, in (0,
            1). Defaults to their share in the data.
        batch_size: Samples per batch, an integer >= 2.
        shuffle: Whether each set is reshuffled at each pass.
        seed: Optional integer seed of the shuffles.

    Returns:
        A `tf.data.Dataset` of known length (batches per epoch).

    Example:

    ```python
    data = kerasdistill.data.labeled_and_unlabeled(
        labeled=(x_train, y_train), unlabeled=x_unlabeled,
        labeled_fraction=0.25, batch_size=64,
    )
    distiller.fit(data, epochs=30, validation_data=(x_val, y_val))
    ```
    """
    x, y, sample_weight = _unpack_labeled(labeled)
    x_unlabeled = _arrays(unlabeled, "unlabeled")
    labeled_count = _count(x, "labeled")
    unlabeled_count = _count(x_unlabeled, "unlabeled")
    _check_same_inputs(x, x_unlabeled)
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None and _count(value, name) != labeled_count:
            raise ValueError(
                f"Expected one {name} entry per labeled input. Received "
                f"{labeled_count} labeled inputs and {_count(value, name)} "
                f"entries in {name}."
            )
    checks.check_integer(batch_size, "batch_size", minimum=2)
    if labeled_fraction is None:
        labeled_fraction = labeled_count / (labeled_count + unlabeled_count)
    checks.check_open_unit_interval(labeled_fraction, "labeled_fraction")
    if seed is not None:
        checks.check_integer(seed, "seed", minimum=0)
    per_batch = min(max(1, round(labeled_fraction * batch_size)), batch_size - 1)
    steps = max(
        -(-labeled_count // per_batch),
        -(-unlabeled_count // (batch_size - per_batch)),
    )
    tf = input_batches.tf()
    weights = (
        np.ones((labeled_count,), "float32")
        if sample_weight is None
        else sample_weight.astype("float32")
    )
    labeled_rows = (x, y, weights)
    placeholder = tree.map_structure(
        lambda a: np.zeros((unlabeled_count, *a.shape[1:]), a.dtype), y
    )
    unlabeled_rows = (x_unlabeled, placeholder, np.ones((unlabeled_count,), "float32"))
    streams = [
        _batches(tf, rows, count, size, shuffle, seed, index)
        for index, (rows, count, size) in enumerate(
            [
                (labeled_rows, labeled_count, per_batch),
                (unlabeled_rows, unlabeled_count, batch_size - per_batch),
            ]
        )
    ]

    def combine(first, second, batch_seed):
        has_label = tf.concat(
            [tf.ones([per_batch], "float32"), tf.zeros([batch_size - per_batch])], 0
        )
        rows = tree.map_structure(
            lambda a, b: tf.concat([a, b], 0), (*first, has_label), (*second, has_label)
        )
        order = tf.range(batch_size)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, batch_seed)
        inputs, targets, weights, mask = tree.map_structure(
            lambda t: tf.gather(t, order), rows
        )
        partial = labels.partial_labels(targets, mask)
        if sample_weight is None:
            return inputs, partial
        return inputs, partial, weights

    return (
        tf.data.Dataset.zip(*streams, _seeds(tf, seed))
        .map(combine, num_parallel_calls=tf.data.AUTOTUNE)
        .take(steps)
        .prefetch(tf.data.AUTOTUNE)
    )


def _unpack_labeled(labeled):
    if not isinstance(labeled, tuple) or len(labeled) not in (2, 3):
        raise TypeError(
            "Expected `labeled` to be a tuple (x, y) or (x, y, sample_weight). "
            f"Received: {type(labeled).__name__}"
            + (f" of length {len(labeled)}" if isinstance(labeled, tuple) else "")
            + ". Pass several inputs as a list or dict inside the tuple."
        )
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(labeled)
    if y is None:
        raise ValueError(
            "Expected labels in `labeled`: (x, y). Received y=None. Pass the "
            "inputs without labels as `unlabeled`."
        )
    return (
        _arrays(x, "labeled"),
        _arrays(y, "y"),
        None if sample_weight is None else _arrays(sample_weight, "sample_weight"),
    )


def _arrays(data, name):
    if data is None:
        raise ValueError(f"Expected `{name}` data. Received: None.")
    try:
        return tree.map_structure(np.asarray, data)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Expected `{name}` to be arrays (numpy arrays or tensors, a dict "
            f"or list of them). Received {type(data).__name__}: {error}"
        ) from error


def _count(data, name):
    counts = {len(array) if array.ndim else 0 for array in tree.flatten(data)}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(
            f"Expected `{name}` to hold samples, the same number in every "
            f"array. Received arrays of lengths {sorted(counts)}."
        )
    return counts.pop()


def _check_same_inputs(x, x_unlabeled):
    try:
        tree.assert_same_structure(x, x_unlabeled)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Expected the labeled and the unlabeled inputs to have the same "
            f"structure. Received {type(x).__name__} and "
            f"{type(x_unlabeled).__name__}: {error}"
        ) from error
    for a, b in zip(tree.flatten(x), tree.flatten(x_unlabeled)):
        if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
            raise ValueError(
                "Expected the labeled and the unlabeled inputs to have the "
                f"same shape per sample and dtype. Received {a.shape[1:]} "
                f"{a.dtype} (labeled) and {b.shape[1:]} {b.dtype} (unlabeled)."
            )


def _batches(tf, rows, count, size, shuffle, seed, index):
    """An endless stream of batches of `size` rows, reshuffled each pass."""
    dataset = tf.data.Dataset.from_tensor_slices(rows)
    if shuffle:
        dataset = dataset.shuffle(
            count,
            seed=None if seed is None else seed + index,
            reshuffle_each_iteration=True,
        )
    return dataset.repeat().batch(size, drop_remainder=True)


def _seeds(tf, seed):
    """A stream of stateless shuffle seeds, one per batch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def check_batches(data):
    """`data` as `fit()` reads it, with a check of each batch of a
    `keras.utils.PyDataset`: a batch with labels among batches without (or
    the reverse) raises a `ValueError` that names the documented way, where
    Keras would fail with a "tuple arity mismatch" (TensorFlow) or train
    the two kinds of batch on two objectives (JAX, PyTorch). Other data is
    returned as it is (a `tf.data.Dataset` has one element structure).

    Example:

    ```python
    distiller.fit(kerasdistill.data.semi_supervised.check_batches(data))
    ```
    """
    if isinstance(data, keras.utils.PyDataset) and not isinstance(data, _SameArity):
        return _SameArity(data)
    return data


class _SameArity(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` that reads `dataset`'s batches and refuses
    one whose labels are there where the first batch's were not, or
    missing where they were."""

    def __init__(self, dataset):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.labeled = None

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        batch = self.dataset[index]
        _, y, _ = keras.utils.unpack_x_y_sample_weight(
            batch if isinstance(batch, tuple) else (batch,)
        )
        labeled = y is not None
        if self.labeled is None:
            self.labeled = labeled
        elif labeled != self.labeled:
            raise ValueError(
                f"Expected every batch of {type(self.dataset).__name__} to "
                "have labels, or none to. Received batch "
                f"{index} {'with' if labeled else 'without'} labels after "
                f"batches {'with' if self.labeled else 'without'}. "
                + labels.DOCUMENTED_WAY
            )
        return batch

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()
