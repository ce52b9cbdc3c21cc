"""Per-position weights of the losses on sequences: padded positions do not
count.

A transformer's hidden states are `(batch, positions, hidden)`, a language
model's logits `(batch, positions, vocabulary)`; at a padded position they
are whatever the padding tokens make them. The losses on sequences read the
model's padding mask from the batch's inputs (keras-hub's `"padding_mask"`,
or an input the user names) and combine it with `sample_weight`, which may
be per sample `(batch,)` or, as Keras allows for sequence outputs, per
position `(batch, positions)`; a position whose weight is 0 is padding too
(keras-hub's causal-LM preprocessors pass the padding mask of the labels as
that weight).

They reduce as Keras reduces a masked sequence (`keras.losses.Loss` with
a mask): the mean over the batch's unpadded positions, `sum(values * weight)
/ count(unpadded)`, where the count runs over the whole batch, so every real
token counts once whatever the length of its sequence (TRL's GKD loss
reduces the same way). A loss returns that mean as one share per sample
(`position_mean`), whose mean over the batch is the masked mean: the
`Distiller` reduces it as any per-sample loss, per-sample `sample_weight`
included.
"""

from keras import ops
from keras import tree

from kerasdistill import reduction
from kerasdistill.losses import base

_EPSILON = 1e-12


class PositionWeightedLoss(base.DistillationLoss):
    """A loss on sequences that takes a per-position `sample_weight`
    `(batch, positions)` as well as a per-sample one: its
    `_values(teacher, student, training=, inputs=, position_weight=)` gives
    one value per sample with the positions weighted.

    Example:

    ```python
    loss = kerasdistill.FeatureDistillation("mse", "t_seq", "s_seq", mask=None)
    isinstance(loss, kerasdistill.losses.masking.PositionWeightedLoss)  # True
    ```
    """

    def compute_loss(
        self,
        teacher_outputs,
        student_outputs,
        sample_weight=None,
        y_true=None,
        training=None,
        inputs=None,
    ):
        per_sample, per_position = split_sample_weight(sample_weight)
        if per_position is None:
            return super().compute_loss(
                teacher_outputs, student_outputs, per_sample, y_true, training, inputs
            )
        values = self._values(
            base.to_float32(teacher_outputs),
            base.to_float32(student_outputs),
            training=training,
            inputs=inputs,
            position_weight=per_position,
        )
        return reduction.weighted_mean(values, per_sample)


def check_mask_key(mask, name):
    """Refuses a `mask` that is neither `None`, an input name nor an index."""
    if (
        mask is None
        or isinstance(mask, str)
        or (isinstance(mask, int) and not isinstance(mask, bool) and mask >= 0)
    ):
        return
    raise TypeError(
        f"{name}: expected `mask` to be None, the name of the input that "
        "holds the padding mask (e.g. 'padding_mask' for keras-hub models) "
        "or the index of that input in a list of inputs. Received: "
        f"mask={mask!r} of type {type(mask).__name__}"
    )


def check_model_has_mask(model, mask, role, name):
    """Refuses before training a `mask` input that `model` does not take."""
    if mask is None:
        return
    try:
        inputs = model.input
    except (AttributeError, ValueError):  # a subclassed model: checked in the step
        return
    if isinstance(mask, str):
        if not isinstance(inputs, dict) or mask not in inputs:
            received = sorted(inputs) if isinstance(inputs, dict) else "one tensor"
            raise ValueError(
                f"{name}: expected the {role} '{model.name}' to take a dict "
                f"input '{mask}' holding the padding mask. Received inputs: "
                f"{received}. Name the input that holds the mask with mask=, "
                "or pass mask=None."
            )
    elif not isinstance(inputs, (list, tuple)) or mask >= len(inputs):
        count = len(inputs) if isinstance(inputs, (list, tuple)) else 1
        raise ValueError(
            f"{name}: expected the {role} '{model.name}' to take a list of "
            f"inputs with the padding mask at index {mask}. Received "
            f"{count} input(s). Pass the index of the mask input, or mask=None."
        )


def padding_mask(inputs, mask, name):
    """The `(batch, positions)` float32 mask (1 = a real token) that the
    input `mask` (a dict key or a list index) of `inputs` holds."""
    if isinstance(mask, str):
        if not isinstance(inputs, dict) or mask not in inputs:
            received = (
                sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            )
            raise ValueError(
                f"{name}: expected the batch's inputs to be a dict with the "
                f"padding mask under '{mask}'. Received: {received}. Name the "
                "input that holds the mask with mask=, or pass mask=None."
            )
        values = inputs[mask]
    else:
        if not isinstance(inputs, (list, tuple)) or mask >= len(inputs):
            raise ValueError(
                f"{name}: expected the batch's inputs to be a list with the "
                f"padding mask at index {mask}. Received: "
                f"{type(inputs).__name__}. Pass mask=None for a single input."
            )
        values = inputs[mask]
    return ops.cast(ops.not_equal(ops.cast(values, "float32"), 0.0), "float32")


def split_sample_weight(sample_weight):
    """`(per_sample, per_position)`: a `(batch,)` or `(batch, 1)` weight is
    per sample, a `(batch, positions)` one per position (the other `None`)."""
    if sample_weight is None:
        return None, None
    sample_weight = ops.cast(sample_weight, "float32")
    shape = tuple(sample_weight.shape)
    if len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1):
        return sample_weight, None
    if len(shape) == 2:
        return None, sample_weight
    raise ValueError(
        "Expected `sample_weight` of shape (batch,) or (batch, positions) for "
        f"a loss on sequences. Received shape {shape}."
    )


def check_positions(feature, weights, name):
    """Refuses a feature without a positions axis that `weights` can mask:
    `(batch, positions, ...)` with the weights' number of positions."""
    if len(feature.shape) < 3:
        raise ValueError(
            f"{name}: a padding mask or per-position sample weights need "
            "features of shape (batch, positions, channels). Received a "
            f"feature of shape {tuple(feature.shape)}. Tap a layer that "
            "returns a sequence (e.g. a transformer layer), or pass mask=None "
            "and per-sample weights."
        )
    positions, expected = feature.shape[1], weights.shape[1]
    if positions is not None and expected is not None and positions != expected:
        raise ValueError(
            f"{name}: expected the feature's positions (axis 1) to match the "
            f"mask's. Received a feature of shape {tuple(feature.shape)} and "
            f"a mask of shape {tuple(weights.shape)}."
        )


def zero_padded(features, valid):
    """`features` with every padded position (where `valid` is 0) set to 0."""
    return tree.map_structure(
        lambda x: (
            x * ops.reshape(valid, (*ops.shape(valid), *[1] * (len(x.shape) - 2)))
        ),
        features,
    )


def position_mean(values, valid, position_weight=None):
    """Per-sample shares of the mean over the batch's unpadded positions.

    `values` and `valid` are `(batch, positions)`; a position counts where
    `valid` is not 0 and `position_weight` (if given) is not 0. The result
    `r` has shape `(batch,)` and `mean(r) = sum(values * valid *
    position_weight) / count(counted positions)`: sample `i`'s share is
    `batch * sum_j(values_ij * valid_ij * position_weight_ij) / count`, the
    Keras masked mean of the batch spread over its samples (0 when no
    position counts). Values at padded positions are ignored, NaN included.

    Args:
        values: Per-position values, `(batch, positions)`.
        valid: `(batch, positions)`, 1 for a token, 0 for padding.
        position_weight: Optional `(batch, positions)` weights.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    ```python
    shares = kerasdistill.losses.masking.position_mean(
        keras.ops.array([[1.0, 3.0, 9.0], [5.0, 7.0, 7.0]]),
        keras.ops.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    )  # [2.667, 3.333]: mean 3.0, that of the unpadded 1, 3 and 5
    ```
    """
    valid = ops.cast(valid, "float32")
    weights = valid
    if position_weight is not None:
        position_weight = ops.cast(position_weight, "float32")
        valid = valid * ops.cast(ops.not_equal(position_weight, 0.0), "float32")
        weights = valid * position_weight
    totals = ops.sum(ops.where(valid > 0, values * weights, 0.0), axis=1)
    batch = ops.cast(ops.shape(values)[0], "float32")
    return ops.divide_no_nan(totals * batch, ops.sum(valid))


def masked_mean(values, valid, position_weight=None):
    """The mean over the unpadded positions of `values` `(batch, positions)`,
    each weighted by `position_weight`: `sum(v * valid * w) / sum(valid)`
    per sample (0 for a sample without a real token).

    Example:

    ```python
    kerasdistill.losses.masking.masked_mean(
        keras.ops.array([[1.0, 3.0, 9.0]]), keras.ops.array([[1.0, 1.0, 0.0]])
    )  # [2.0]
    ```
    """
    weights = valid if position_weight is None else valid * position_weight
    total = ops.sum(values * weights, axis=1)
    return total / ops.maximum(ops.sum(valid, axis=1), _EPSILON)


def mean_position_weight(valid, position_weight):
    """Each sample's mean weight over its unpadded positions: the sample
    weight of a loss that does not split into per-position terms."""
    return masked_mean(position_weight, valid)
