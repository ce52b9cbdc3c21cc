"""The batches of a teacher-output cache, fed to `fit()` the cheapest way on
each backend.

`kerasdistill.cache_teacher_outputs` holds the cache in memory as numpy
arrays and returns a `CachedTeacherOutputs`, a `keras.utils.PyDataset` that
any Keras `fit()`, `evaluate()` or `predict()` reads. A `Distiller` reads it
without Python work per batch: on TensorFlow through `tf.data` (its
`as_dataset()`), on JAX and PyTorch as arrays that Keras's own array
adapter batches and shuffles, because there the conversion of each
`tf.data` batch costs about as much as a small student's training step.
"""

import keras
import numpy as np
from keras import tree

from kerasdistill.data import input_batches


class CachedTeacherOutputs(keras.utils.PyDataset):
    """A teacher's outputs, cached with the inputs, labels and sample
    weights they belong to, yielded in batches (reshuffled at each epoch).

    Each batch is a Keras `(x, y, sample_weight)` tuple (`(x, y)` without
    sample weights, `x` alone without labels) whose `x` is
    `{"inputs": ..., "<key>": {"outputs": ..., "features": {...}}}` (see
    `kerasdistill.cache`). Build it with
    `kerasdistill.cache_teacher_outputs`.

    Args:
        x: The cached `x` of every sample, as numpy arrays.
        y: The labels, or `None`.
        sample_weight: The sample weights, or `None`.
        batch_size: Samples per batch (the last batch may be smaller).
        shuffle: Whether the samples are reshuffled at each epoch.

    Example:

    ```python
    cached = kerasdistill.cache_teacher_outputs(teacher, (x, y), batch_size=64)
    distiller.fit(cached, epochs=20)  # the teacher does not run
    dataset = cached.as_dataset()  # the same batches, as a tf.data.Dataset
    ```
    """

    def __init__(self, x, y, sample_weight, batch_size, shuffle):
        super().__init__()
        self.x = x
        self.y = y
        self.sample_weight = sample_weight
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.samples = len(tree.flatten(x)[0])
        self._order = np.arange(self.samples)
        self.on_epoch_end()

    @property
    def num_batches(self):
        return -(-self.samples // self.batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(
                f"Batch {index} out of range: the cache has {self.num_batches}."
            )
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return keras.utils.pack_x_y_sample_weight(
            *tree.map_structure(
                lambda array: array[rows],
                (self.x, self.y, self.sample_weight),
                none_is_leaf=False,
            )
        )

    def on_epoch_end(self):
        if self.shuffle:
            self._order = np.random.default_rng().permutation(self.samples)

    def as_dataset(self):
        """The same batches as a `tf.data.Dataset`, gathered by indices
        shuffled anew at each iteration (the vectorised scheme of Keras's
        array adapter), for a pipeline of your own or for TensorFlow's
        `tf.distribute`.

        Example:

        ```python
        cached.as_dataset().take(2)
        ```
        """
        return batched_dataset(
            (self.x, self.y, self.sample_weight), self.batch_size, self.shuffle
        )

    def fit_arguments(self):
        """The keyword arguments of Keras's `fit()` / `evaluate()` that feed
        these batches the cheapest way on the current backend (`fit()`
        also takes `shuffle=self.shuffle` with the arrays).

        Example:

        ```python
        keras.Model.evaluate(distiller, **cached.fit_arguments())
        ```
        """
        if keras.backend.backend() == "tensorflow":
            return {"x": self.as_dataset()}
        return {
            "x": self.x,
            "y": self.y,
            "sample_weight": self.sample_weight,
            "batch_size": self.batch_size,
        }


def batched_dataset(element, batch_size, shuffle):
    """A `tf.data.Dataset` over the numpy arrays `element` (`(x, y,
    sample_weight)`): of single samples without `batch_size`, else of
    batches gathered by shuffled indices, reshuffled at each iteration even
    under `keras.utils.set_random_seed`.

    Example:

    ```python
    batched_dataset((x, y, None), batch_size=32, shuffle=True)
    ```
    """
    tf = input_batches.tf()
    packed = keras.utils.pack_x_y_sample_weight(*element)
    if batch_size is None:
        return tf.data.Dataset.from_tensor_slices(packed)
    samples = len(tree.flatten(element[0])[0])
    arrays = tf.data.Dataset.from_tensors(packed).repeat()
    return (
        tf.data.Dataset.zip(_index_batches(samples, batch_size, shuffle), arrays)
        .map(_gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .apply(tf.data.experimental.assert_cardinality(-(-samples // batch_size)))
    )


def _index_batches(samples, batch_size, shuffle):
    """Batches of sample indices, in a new random order at each iteration."""
    tf = input_batches.tf()
    full = samples - samples % batch_size

    def batches(seed):
        indices = tf.range(samples, dtype=tf.int64)
        if shuffle:
            indices = tf.random.experimental.stateless_shuffle(
                indices, seed=tf.stack([seed, seed])
            )
        result = tf.data.Dataset.from_tensor_slices(
            tf.reshape(indices[:full], [-1, batch_size])
        )
        if full < samples:
            result = result.concatenate(tf.data.Dataset.from_tensors(indices[full:]))
        return result

    seeds = tf.data.Dataset.random(rerandomize_each_iteration=True).take(1)
    return seeds.flat_map(batches)


def _gather(indices, arrays):
    tf = input_batches.tf()
    return tree.map_structure(lambda array: tf.gather(array, indices), arrays)
