"""Small pieces shared by the models that train a student: the Distiller
and those that write their own train step (deep supervision, mutual
learning)."""

import keras
import numpy as np
from keras import ops
from keras import tree

from kerasdistill import checks
from kerasdistill import reduction
from kerasdistill.losses import keras_compat


def require_labels(y, what):
    """Raises a `ValueError` for a batch without labels; `what` says what
    learns from them and how."""
    if y is None:
        raise ValueError(
            f"Expected batches with labels: {what}. Received a batch without "
            "labels. Pass `y` to fit() / evaluate(), or a dataset of (x, y) "
            "pairs."
        )


def require_compile_loss(loss, why):
    """Raises a `ValueError` when `compile()` got no `loss`; `why` says what
    the model trains on the labels."""
    if loss is None:
        raise ValueError(
            f"Expected compile() to be given the labels' loss: {why}. "
            "Received compile() without `loss`. Pass e.g. "
            "loss=keras.losses.SparseCategoricalCrossentropy("
            'from_logits=True) or loss="mse".'
        )


def label_loss(model, x, y, y_pred, sample_weight, regularization):
    """`model`'s compiled loss on the labels (Keras's `compute_loss`), in
    float32, without the `regularization` losses that it adds."""
    total = keras.Model.compute_loss(model, x, y, y_pred, sample_weight, training=False)
    return ops.cast(total, "float32") - regularization


def output_distillation_loss(loss, what):
    """A distillation loss that compares final outputs (no layer taps)."""
    loss = keras_compat.as_distillation_loss(loss)
    for role, layer_name in (
        ("teacher", loss.teacher_layer_name),
        ("student", loss.student_layer_name),
    ):
        if layer_name is not None:
            raise ValueError(
                f"{what} compares the networks' outputs, so its distillation "
                f"loss cannot tap a layer. Received {type(loss).__name__} "
                f"with {role}_layer_name={layer_name!r}. Use "
                "kerasdistill.LogitsDistillation or RegressionDistillation."
            )
    return loss


def distillation_value(
    loss, teacher, student, y, sample_weight, training=None, inputs=None
):
    """`loss` (a `kerasdistill.DistillationLoss`) on (stop-gradient
    `teacher`, `student`), weighted per sample and reduced: a float32
    scalar. A loss may read the batch's `inputs` (e.g. a padding mask)."""
    teacher = tree.map_structure(ops.stop_gradient, teacher)
    loss.validate_outputs(teacher, student)
    return loss.compute_loss(
        teacher,
        student,
        sample_weight=sample_weight,
        y_true=y,
        training=training,
        inputs=inputs,
    )


def regularization(model):
    """The sum of `model.losses` (the regularization and `add_loss` losses
    of its forward pass), in float32 and scaled for the replicas, as
    Keras's `compute_loss` adds them.

    Read it before the teacher runs in `compute_loss`: the teacher's own
    forward pass would add its activity losses on some backends."""
    total = ops.zeros((), dtype="float32")
    for value in model.losses:
        total = total + ops.sum(ops.cast(value, "float32"))
    return reduction.scale_for_replicas(total)  # as Keras's TensorFlow trainer


def non_trainable(name, value):
    return keras.Variable(float(value), dtype="float32", trainable=False, name=name)


def read(variable):
    """A scalar variable's value as a Python float (outside a trace)."""
    return float(np.asarray(ops.convert_to_numpy(variable)))


def track(tracker, value, batch):
    """Records a loss (scaled for the replicas) in a `Mean` tracker, per sample."""
    tracker.update_state(reduction.unscale_for_replicas(value), sample_weight=batch)


def has_labels(x, y):
    """Whether data given to `fit(x, y)` carries labels, when that can be
    told without reading it: `y` given, or a `tf.data.Dataset` whose
    elements are `(x, y, ...)` tuples. `False` when unknown."""
    if y is not None:
        return True
    spec = getattr(x, "element_spec", None)
    return isinstance(spec, tuple) and len(spec) >= 2 and spec[1] is not None


class CompileFromConfig:
    """The `compile_from_config` of the models that train a student: it
    builds the optimizer, so that its saved variables load.

    Keras saves an optimizer trained under PyTorch as its backend class
    (`keras.src.backend.torch.optimizers...`), which JAX and TensorFlow load
    but cannot run (Keras 3.15, plain models too); the public
    `keras.optimizers` class of the same name is loaded instead."""

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()` (used when loading)."""
        config = dict(config, optimizer=_portable(config.get("optimizer")))
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)


def _portable(config):
    if isinstance(config, dict):
        config = {key: _portable(value) for key, value in config.items()}
        if str(config.get("module", "")).startswith("keras.src.backend."):
            config["module"] = "keras.optimizers"
    return config


@keras.saving.register_keras_serializable(package="kerasdistill")
class LatestValue(keras.metrics.Metric):
    """A metric that reports the last value it was given: how History logs
    a variable (alpha, a temperature) that a schedule changes, read inside
    the compiled step on every backend.

    Example:

    ```python
    alpha = LatestValue(name="alpha")
    alpha.update_state(0.5)
    alpha.result()  # 0.5
    ```
    """

    def __init__(self, name, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(
            shape=(), initializer="zeros", name="value", aggregation="mean"
        )

    def update_state(self, value):
        self.value.assign(ops.cast(ops.stop_gradient(value), self.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)

    def reset_state(self):
        """Keeps the value: it is the variable's, not the epoch's."""


def temperature_trackers(distillation_losses):
    """`[(loss, LatestValue)]` for each loss with a temperature variable,
    logged as `temperature` (one such loss) or `<loss name>_temperature`;
    a loss that learns its temperature (`CTKD`) is logged too."""
    tempered = [
        loss
        for loss in distillation_losses
        if loss.temperature is not None or getattr(loss, "learns_temperature", False)
    ]
    return [
        (
            loss,
            LatestValue(
                name="temperature" if len(tempered) == 1 else f"{loss.name}_temperature"
            ),
        )
        for loss in tempered
    ]


def serialize_uncompiled(model):
    """A model's config without its own compile state (the wrapper's
    optimizer trains it, or a copy is saved without an optimizer)."""
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


def metric_results(metrics, skip):
    """The results of `metrics`, as `Model.get_metrics_result` gives them,
    leaving out those in `skip` and those never built (an unbuilt
    `CompileMetrics` has no variables yet)."""
    results = {}
    for metric in metrics:
        if not metric.variables or any(metric is m for m in skip):
            continue
        result = metric.result()
        results.update(result if isinstance(result, dict) else {metric.name: result})
    return results
