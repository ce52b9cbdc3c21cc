"""Accepting `keras.distillation` loss objects.

`keras.distillation.LogitsDistillation` with a KL or cross-entropy loss and
`keras.distillation.FeatureDistillation` are translated into their
kerasdistill equivalents, which compute the loss on softened probabilities
(the built-in applies its default KL to raw scaled logits), honour
`sample_weight` and carry a schedulable temperature. Any other object with a
`compute_loss(teacher_outputs, student_outputs)` method (a custom subclass of
`keras.distillation.DistillationLoss`) is used as it is.
"""

import keras
from keras import tree

from kerasdistill.losses import base
from kerasdistill.losses import features
from kerasdistill.losses import logits


def as_distillation_loss(loss):
    """Returns a kerasdistill loss for `loss`, or `loss` itself.

    Example:

    ```python
    loss = as_distillation_loss(keras.distillation.LogitsDistillation(4.0))
    assert isinstance(loss, kerasdistill.LogitsDistillation)
    ```
    """
    if isinstance(loss, base.DistillationLoss):
        return loss
    builtin = getattr(keras, "distillation", None)
    if builtin is not None and isinstance(loss, builtin.LogitsDistillation):
        spec = tree.map_structure(_logits_loss_name, loss.loss)
        if all(s != "untranslatable" for s in tree.flatten(spec)):
            return logits.LogitsDistillation(
                temperature=loss.temperature, loss=spec
            )
        return loss
    if builtin is not None and isinstance(loss, builtin.FeatureDistillation):
        flat = tree.flatten(loss.loss)
        if len(flat) == 1:
            return features.FeatureDistillation(
                loss=flat[0],
                teacher_layer_name=loss.teacher_layer_name,
                student_layer_name=loss.student_layer_name,
            )
        return loss
    if callable(getattr(loss, "compute_loss", None)):
        return loss
    raise TypeError(
        "Expected each distillation loss to be a kerasdistill.DistillationLoss "
        "(e.g. kerasdistill.LogitsDistillation()) or a keras.distillation "
        f"loss. Received: {loss!r} of type {type(loss).__name__}"
    )


def _logits_loss_name(loss_fn):
    if loss_fn is None:
        return None
    if loss_fn is keras.losses.kl_divergence or isinstance(
        loss_fn, keras.losses.KLDivergence
    ):
        return "kl_divergence"
    if loss_fn is keras.losses.categorical_crossentropy or isinstance(
        loss_fn, keras.losses.CategoricalCrossentropy
    ):
        return "soft_cross_entropy"
    return "untranslatable"
