"""Small pieces shared by the models that train a student: the Distiller
and those that write their own train step (deep supervision, mutual
learning)."""

import keras
import tensorflow as tf
from keras import ops
from keras import tree
from keras.src.losses.loss import scale_loss_for_distribution

from kerasdistill import checks
from kerasdistill import compat
from kerasdistill import losses


def batch_size(x):
    return tf.shape(next(i for i in tree.flatten(x) if i is not None))[0]


def require_labels(y, what):
    if y is None:
        raise ValueError(
            f"{what} learns from labels. Received a batch without labels. "
            "Pass `y` to fit() / evaluate() (or a dataset of (x, y) pairs)."
        )


def output_distillation_loss(loss, what):
    """A distillation loss that compares final outputs (no layer taps)."""
    loss = compat.as_distillation_loss(loss)
    for role in ("teacher", "student"):
        layer_name = getattr(loss, f"{role}_layer_name", None)
        if layer_name is not None:
            raise ValueError(
                f"{what} compares the networks' outputs, so its distillation "
                f"loss cannot tap a layer. Received {type(loss).__name__} "
                f"with {role}_layer_name={layer_name!r}. Use "
                "kerasdistill.LogitsDistillation or RegressionDistillation."
            )
    return loss


def distillation_value(loss, teacher, student, y, sample_weight, training=None):
    """`loss` on (stop-gradient `teacher`, `student`), as a float32 scalar:
    a kerasdistill loss weighted per sample, a `keras.distillation` loss
    (one value per batch) scaled for the replicas."""
    teacher = tree.map_structure(ops.stop_gradient, teacher)
    if hasattr(loss, "validate_outputs"):
        loss.validate_outputs(teacher, student)
    if isinstance(loss, losses.DistillationLoss):
        return loss.compute_loss(
            teacher, student, sample_weight=sample_weight, y_true=y,
            training=training,
        )
    if sample_weight is not None:
        raise ValueError(
            f"{type(loss).__name__} returns one value per batch, so it cannot "
            "apply the `sample_weight` / `class_weight` given to fit(). "
            "Subclass kerasdistill.DistillationLoss and return one value per "
            "sample from `call`, or fit without sample weights."
        )
    value = ops.cast(loss.compute_loss(teacher, student), "float32")
    return scale_loss_for_distribution(value)


def regularization(model, layer):
    """The sum of `layer`'s regularization losses, aggregated as `model`'s."""
    total = ops.zeros((), dtype="float32")
    for value in layer.losses:
        total = total + ops.cast(model._aggregate_additional_loss(value), "float32")
    return total


def non_trainable(name, value):
    return keras.Variable(float(value), dtype="float32", trainable=False, name=name)


def serialize_uncompiled(model):
    """A model's config without its own compile state (the wrapper's
    optimizer trains it)."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


def _get_student_loss_weight(model):
    return model._student_loss_weight


def _set_student_loss_weight(model, value):
    checks.check_unit_interval(value, "student_loss_weight")
    model._student_loss_weight.assign(float(value))


student_loss_weight = property(
    _get_student_loss_weight,
    _set_student_loss_weight,
    doc="`alpha`, a variable; assign a number in [0, 1] to change it.",
)
