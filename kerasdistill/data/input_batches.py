"""The data given to `cache_teacher_outputs`, read as numpy batches
`(x, y, sample_weight)`: arrays, a `tf.data.Dataset` or a
`keras.utils.PyDataset`."""

import sys

import keras
import numpy as np
from keras import tree


def tf():
    """TensorFlow, imported on first use (a cache is a `tf.data.Dataset`)."""
    import tensorflow as tf

    return tf


def is_tf_dataset(data):
    """Whether `data` is a `tf.data.Dataset`, without importing TensorFlow
    (a dataset cannot exist unless it was imported)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


class InputBatches:
    """The `(x, y, sample_weight)` batches of `data`, in order, as numpy
    (`None` where there are no labels or weights), from what
    `cache_teacher_outputs` documents: arrays (numpy, backend tensors,
    anything `numpy.asarray` reads) or a tuple of them, cut into batches of
    `batch_size`; a `tf.data.Dataset` or a `keras.utils.PyDataset`, whose
    own batches are kept."""

    def __init__(self, data, batch_size):
        if data is None:
            raise ValueError("Expected `data` to hold the inputs. Received: data=None.")
        self.batch_size = batch_size
        self.data = data
        if is_tf_dataset(data):
            self.kind = "tf.data"
        elif isinstance(data, keras.utils.PyDataset):
            self.kind = "PyDataset"
            if data.num_batches is None:
                raise ValueError(
                    "Expected a keras.utils.PyDataset of finite length, to "
                    "cache each of its batches once. Received "
                    f"{type(data).__name__} with num_batches=None (infinite). "
                    "Give it a `num_batches` (or `__len__`), or pass arrays."
                )
        else:
            self.kind = "arrays"
            if isinstance(data, tuple):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            else:
                x, y, sample_weight = data, None, None
            if x is None:
                raise ValueError(
                    "Expected `data` to hold the inputs. Received: data=None."
                )
            self.arrays = tree.map_structure(
                _as_array, (x, y, sample_weight), none_is_leaf=False
            )
            lengths = {len(a) for a in tree.flatten(self.arrays) if a is not None}
            if len(lengths) != 1:
                raise ValueError(
                    "Expected the inputs, labels and sample weights in "
                    "`data` to hold the same number of samples. Received "
                    f"arrays of lengths {sorted(lengths)}."
                )
            self.samples = lengths.pop()

    def __iter__(self):
        if self.kind == "tf.data":
            for batch in self.data.as_numpy_iterator():
                yield _numpy_batch(batch)
        elif self.kind == "PyDataset":
            for index in range(self.data.num_batches):
                yield _numpy_batch(self.data[index])
        else:
            for start in range(0, self.samples, self.batch_size):
                yield tree.map_structure(
                    lambda a, s=start: a[s : s + self.batch_size],
                    self.arrays,
                    none_is_leaf=False,
                )

    def describe(self):
        """What a cache on disk records about the data: the number of
        samples, and whether there are labels and sample weights."""
        if self.kind == "arrays":
            _, y, sample_weight = self.arrays
            return {
                "samples": self.samples,
                "labels": y is not None,
                "sample_weights": sample_weight is not None,
            }
        samples, has_labels, has_weights = 0, False, False
        for x, y, sample_weight in self:
            samples += int(tree.flatten(x)[0].shape[0])
            has_labels, has_weights = y is not None, sample_weight is not None
        return {"samples": samples, "labels": has_labels, "sample_weights": has_weights}


def _numpy_batch(batch):
    """`(x, y, sample_weight)` of one batch of a dataset, as numpy."""
    return tree.map_structure(
        _as_array, keras.utils.unpack_x_y_sample_weight(batch), none_is_leaf=False
    )


def _as_array(value):
    if isinstance(value, (str, bytes)) or callable(getattr(value, "__next__", None)):
        raise _data_type_error(value)
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError) as error:
        raise _data_type_error(value) from error
    if array.dtype == object or array.ndim == 0:
        raise _data_type_error(value)
    return array


def _data_type_error(value):
    return TypeError(
        "Expected `data` to be arrays (numpy arrays or tensors; a dict or "
        "list of them for several inputs), a tuple (x, y) or (x, y, "
        "sample_weight) of those, a tf.data.Dataset or a "
        "keras.utils.PyDataset. Received an element of type "
        f"{type(value).__name__}: {value!r:.80}. Wrap a generator in "
        "tf.data.Dataset.from_generator or a keras.utils.PyDataset."
    )
