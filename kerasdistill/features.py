"""Intermediate-feature distillation: a student layer's output is pulled
toward a teacher layer's output, both tapped in the networks' single
forward pass."""

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill import losses as losses_module
from kerasdistill import taps


@keras.saving.register_keras_serializable(package="kerasdistill")
class FeatureDistillation(losses_module.DistillationLoss):
    """Hint loss between a teacher layer's and a student layer's outputs.

    The per-sample loss is the Keras loss `loss(teacher_features,
    student_features)` averaged over every non-batch axis. With both layer
    names `None`, the final outputs are compared. The tapped shapes must be
    equal.

    Args:
        loss: A Keras loss: a name (`"mse"`, `"mae"`, `"cosine_similarity"`,
            ...), a `keras.losses.Loss` or a function `(y_true, y_pred)`.
            Defaults to `"mse"`.
        teacher_layer_name: Name of the teacher layer to tap, or `None` for
            the final output.
        student_layer_name: Name of the student layer to tap, or `None` for
            the final output.
        name: Optional name.

    Example:

    ```python
    hint = kerasdistill.FeatureDistillation(
        loss="mse", teacher_layer_name="t_hidden", student_layer_name="s_hidden"
    )
    distiller = kerasdistill.Distiller(
        teacher, student, [kerasdistill.LogitsDistillation(), hint],
        distillation_loss_weights=[1.0, 0.5],
    )
    ```

    Reference:
        Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.
        https://arxiv.org/abs/1412.6550
    """

    def __init__(
        self,
        loss="mse",
        teacher_layer_name=None,
        student_layer_name=None,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(loss, dict) and "class_name" in loss:
            loss = keras.losses.deserialize(loss)
        self._loss_fn = _resolve_keras_loss(loss)
        self.loss = loss
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def call(self, teacher_outputs, student_outputs):
        values = self._loss_fn(teacher_outputs, student_outputs)
        if len(values.shape) > 1:
            values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return values

    def validate_outputs(self, teacher_outputs, student_outputs):
        teacher_shape = tuple(teacher_outputs.shape[1:])
        student_shape = tuple(student_outputs.shape[1:])
        if None not in teacher_shape + student_shape and (
            teacher_shape != student_shape
        ):
            raise ValueError(self._shape_message(teacher_shape, student_shape))

    def validate_model_compatibility(self, teacher, student):
        teacher_shape = self._tapped_shape(teacher, self.teacher_layer_name, "teacher")
        student_shape = self._tapped_shape(student, self.student_layer_name, "student")
        if teacher_shape is None or student_shape is None:
            return
        if None not in teacher_shape + student_shape and (
            teacher_shape != student_shape
        ):
            raise ValueError(self._shape_message(teacher_shape, student_shape))

    def _tapped_shape(self, model, layer_name, role):
        if layer_name is None:
            outputs = checks.symbolic_outputs(model)
            return tuple(outputs[0].shape[1:]) if outputs else None
        return tuple(taps.find_layer(model, layer_name, role).output.shape[1:])

    def _shape_message(self, teacher_shape, student_shape):
        return (
            f"FeatureDistillation: expected the tapped teacher and student "
            f"features to have the same shape. Received: teacher "
            f"'{self.teacher_layer_name or 'output'}' {teacher_shape}, "
            f"student '{self.student_layer_name or 'output'}' "
            f"{student_shape}. Tap layers of equal width."
        )

    def get_config(self):
        config = super().get_config()
        loss = self.loss
        if not isinstance(loss, str):
            loss = keras.losses.serialize(loss)
        config.update(
            {
                "loss": loss,
                "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name,
            }
        )
        return config


def _resolve_keras_loss(loss):
    """Returns a function `(y_true, y_pred) -> per-sample values`."""
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    if isinstance(loss, str):
        function = keras.losses.get(loss)
        if function is None:
            raise ValueError(f"Expected a Keras loss name. Received: loss={loss!r}")
        return function
    if callable(loss):
        return loss
    raise TypeError(
        "Expected `loss` to be a Keras loss name, a `keras.losses.Loss` or a "
        f"function. Received: loss={loss!r} of type {type(loss).__name__}"
    )
