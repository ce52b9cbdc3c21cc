"""Accepting `keras.distillation` loss objects.

`keras.distillation.LogitsDistillation` with a KL or cross-entropy loss and
`keras.distillation.FeatureDistillation` are translated into their
kerasdistill equivalents, which compute the loss on softened probabilities
(the built-in applies its default KL to raw scaled logits), honour
`sample_weight` and carry a schedulable temperature. Any other object with a
`compute_loss(teacher_outputs, student_outputs)` method (a custom subclass of
`keras.distillation.DistillationLoss`) is wrapped in a
`KerasDistillationLoss`, which follows kerasdistill's loss protocol
(`kerasdistill.losses.base`) and calls the object's own methods: this module
is the only place that reads a loss that is not a
`kerasdistill.DistillationLoss`.
"""

import keras
from keras import ops
from keras import tree

from kerasdistill import reduction
from kerasdistill.losses import base
from kerasdistill.losses import features
from kerasdistill.losses import logits


def as_distillation_loss(loss):
    """Returns `loss` as a `kerasdistill.DistillationLoss`.

    Example:

    ```python
    loss = kerasdistill.losses.keras_compat.as_distillation_loss(
        keras.distillation.LogitsDistillation(4.0)
    )
    assert isinstance(loss, kerasdistill.LogitsDistillation)
    ```
    """
    if isinstance(loss, base.DistillationLoss):
        return loss
    builtin = getattr(keras, "distillation", None)
    if builtin is not None and isinstance(loss, builtin.LogitsDistillation):
        spec = tree.map_structure(_logits_loss_name, loss.loss)
        if all(s != "untranslatable" for s in tree.flatten(spec)):
            return logits.LogitsDistillation(temperature=loss.temperature, loss=spec)
    if builtin is not None and isinstance(loss, builtin.FeatureDistillation):
        flat = tree.flatten(loss.loss)
        if len(flat) == 1:
            return features.FeatureDistillation(
                loss=flat[0],
                teacher_layer_name=loss.teacher_layer_name,
                student_layer_name=loss.student_layer_name,
            )
    _check_loss(loss)
    return KerasDistillationLoss(loss)


def teacher_layer_name(loss):
    """The teacher layer that `loss` (of any accepted kind) taps, or `None`,
    read without creating a loss object.

    Example:

    ```python
    hint = keras.distillation.FeatureDistillation("mse", "t_hidden", "s_hidden")
    kerasdistill.losses.keras_compat.teacher_layer_name(hint)  # "t_hidden"
    ```
    """
    if isinstance(loss, base.DistillationLoss):
        return loss.teacher_layer_name
    _check_loss(loss)
    return getattr(loss, "teacher_layer_name", None)


@keras.saving.register_keras_serializable(package="kerasdistill")
class KerasDistillationLoss(base.DistillationLoss):
    """A `keras.distillation`-style loss object, used through kerasdistill's
    loss protocol: its own `compute_loss`, `validate_outputs` and
    `validate_model_compatibility`, and its tapped layers.

    Such a loss returns one value for the whole batch, so it cannot apply
    sample weights (a `ValueError` says so), and it counts once under a
    distribution strategy. `as_distillation_loss` creates it for any loss
    it does not translate.

    Args:
        loss: An object with a `compute_loss(teacher_outputs,
            student_outputs)` method, such as a subclass of
            `keras.distillation.DistillationLoss`.
        name: Optional name.

    Example:

    ```python
    class MeanGap(keras.distillation.DistillationLoss):
        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs))

    loss = kerasdistill.losses.keras_compat.KerasDistillationLoss(MeanGap())
    ```
    """

    def __init__(self, loss, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(loss, dict) and "class_name" in loss:
            loss = keras.saving.deserialize_keras_object(loss)
        _check_loss(loss)
        self.loss = loss
        self.teacher_layer_name = getattr(loss, "teacher_layer_name", None)
        self.student_layer_name = getattr(loss, "student_layer_name", None)

    def compute_loss(
        self,
        teacher_outputs,
        student_outputs,
        sample_weight=None,
        y_true=None,
        training=None,
        inputs=None,
    ):
        """The wrapped loss's value for the batch, scaled for the replicas
        of a distribution strategy; `y_true`, `training` and `inputs` are
        not the wrapped loss's arguments."""
        if sample_weight is not None:
            raise ValueError(
                f"{type(self.loss).__name__} returns one value per batch, so "
                "it cannot apply the `sample_weight` / `class_weight` given to "
                "fit(). Subclass kerasdistill.DistillationLoss and return one "
                "value per sample from `call`, or fit without sample weights."
            )
        value = ops.cast(
            self.loss.compute_loss(teacher_outputs, student_outputs), "float32"
        )
        return reduction.scale_for_replicas(value)

    def validate_outputs(self, teacher_outputs, student_outputs):
        validate = getattr(self.loss, "validate_outputs", None)
        if validate is not None:
            validate(teacher_outputs, student_outputs)

    def validate_model_compatibility(self, teacher, student):
        validate = getattr(self.loss, "validate_model_compatibility", None)
        if validate is not None:
            validate(teacher, student)

    def get_config(self):
        config = super().get_config()
        config["loss"] = keras.saving.serialize_keras_object(self.loss)
        return config


def _check_loss(loss):
    if not callable(getattr(loss, "compute_loss", None)):
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
