"""How per-sample loss values become one number, as Keras reduces its own
losses: weighted by `sample_weight`, summed over the batch and divided by
the batch size (`"sum_over_batch_size"`), then scaled for the replicas of a
`tf.distribute` strategy (each replica's loss is 1 / replicas of the total,
so the summed gradients are those of the global batch).

The replica scaling exists only under TensorFlow; on JAX and PyTorch (and
without a strategy) it is the identity, as in Keras itself.
"""

import keras
from keras import ops
from keras import tree


def weighted_mean(values, sample_weight=None):
    """`sum(values * sample_weight) / len(values)`, scaled for the replicas.

    Args:
        values: Per-sample loss values, shape `(batch,)` (or `(batch, 1)`).
        sample_weight: Optional weights of shape `(batch,)` or `(batch, 1)`.

    Returns:
        A float32 scalar.

    Example:

    ```python
    kerasdistill.reduction.weighted_mean(
        keras.ops.array([1.0, 3.0]), keras.ops.array([1.0, 0.0])
    )  # 0.5
    ```
    """
    values = ops.convert_to_tensor(values, dtype="float32")
    if len(values.shape) == 0:
        return values
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        if len(sample_weight.shape) == len(values.shape) + 1:
            sample_weight = ops.squeeze(sample_weight, axis=-1)
        elif len(values.shape) == len(sample_weight.shape) + 1:
            values = ops.squeeze(values, axis=-1)
        values = values * sample_weight
    count = 1  # Python ints where the shape is known (a replica's batch may be empty)
    for size in ops.shape(values):
        count = count * size
    if isinstance(count, int):  # a division by a number: one operation
        mean = ops.sum(values) / count if count else ops.zeros((), "float32")
    else:
        mean = ops.divide_no_nan(ops.sum(values), ops.cast(count, "float32"))
    return scale_for_replicas(mean)


def scale_for_replicas(value):
    """`value / replicas` under a `tf.distribute` strategy, else `value`."""
    replicas = _replicas_in_sync()
    return value if replicas == 1 else value * (1.0 / replicas)


def unscale_for_replicas(value):
    """`value * replicas` under a `tf.distribute` strategy, else `value`:
    what a loss tracker records."""
    replicas = _replicas_in_sync()
    return value if replicas == 1 else value * float(replicas)


def batch_size(x):
    """The number of samples in the batch `x` (any structure of tensors)."""
    return ops.shape(next(i for i in tree.flatten(x) if i is not None))[0]


def regularization(model):
    """The sum of `model.losses` (the regularization and `add_loss` losses
    of its forward pass), in float32 and scaled for the replicas, as
    Keras's `compute_loss` adds them.

    Read it before the teacher runs in `compute_loss`: the teacher's own
    forward pass would add its activity losses on some backends.

    Example:

    ```python
    kerasdistill.reduction.regularization(distiller)  # 0.0 without any
    ```
    """
    total = ops.zeros((), dtype="float32")
    for value in model.losses:
        total = total + ops.sum(ops.cast(value, "float32"))
    return scale_for_replicas(total)  # as Keras's TensorFlow trainer


def mean_over_labeled(batch_mean, batch, has_label):
    """`(loss, weight)` for a loss reduced over a batch in which only the
    samples where `has_label` is 1 count.

    `batch_mean` is `sum(loss * has_label) / batch`, scaled for the
    replicas (Keras's `sum_over_batch_size`). `loss` is the sum over the
    labeled samples divided by their number in the global batch (summed
    over the replicas of a `tf.distribute` strategy, whose gradients add
    up), 0 when none is labeled; `weight` is what a loss tracker records it
    with, so that an epoch's mean is the mean over its labeled samples.

    Example:

    ```python
    loss, weight = kerasdistill.reduction.mean_over_labeled(
        keras.ops.array(0.5), 4, keras.ops.array([1.0, 1.0, 0.0, 0.0])
    )  # loss 1.0: the two labeled samples' mean; weight 2.0
    ```
    """
    replicas = _replicas_in_sync()
    labeled = _sum_over_replicas(ops.sum(has_label))
    total = batch_mean * ops.cast(batch, "float32") * float(replicas)
    return ops.divide_no_nan(total, labeled), labeled / float(replicas)


def _sum_over_replicas(value):
    """`value` summed over the replicas of a `tf.distribute` strategy (in a
    replica context), else `value` (one replica, or the cross-replica
    context in which Keras builds the model's metrics before training)."""
    if _replicas_in_sync() == 1:
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _replicas_in_sync():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf  # the TensorFlow backend has it loaded already

    return tf.distribute.get_strategy().num_replicas_in_sync
