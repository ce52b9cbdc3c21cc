"""Per-sample weighting of a distillation loss by the sample's difficulty."""

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill.losses import base
from kerasdistill.losses import keras_compat


@keras.saving.register_keras_serializable(package="kerasdistill")
class DifficultyWeighted(base.DistillationLoss):
    """Weights each sample's distillation loss by how hard the sample is.

    For a batch of per-sample losses `l_i` of the wrapped `loss`, this loss
    returns `w_i * l_i` with

        w_i = beta * (1 + scale * tanh(l_i - mu))

    where `mu` is a running mean of the batch-mean loss (an exponential
    moving average with `momentum`, bias-corrected like Adam's moments so
    that the first batch is not compared with 0). Samples the student
    imitates worse than usual (`l_i > mu`) weigh up to `beta * (1 + scale)`,
    easy ones down to `beta * (1 - scale)`; a negative `scale` does the
    reverse (down-weights hard, possibly mislabelled, samples). The weights
    are constants for the gradient (`stop_gradient`): only `l_i` is
    differentiated.

    The running mean is updated in training steps only, with the current
    batch included, and is a non-trainable variable: it is saved with the
    model and restored by `keras.callbacks.BackupAndRestore`. `mu` is in the
    units of the wrapped loss (e.g. `T^2 * KL` for `LogitsDistillation`), so
    `tanh` saturates when losses differ by more than about 2; choose `scale`
    (or rescale the loss) accordingly.

    This is a heuristic in the spirit of hard-example re-weighting (as in
    focal loss, Lin et al. 2017, which however down-weights easy examples by
    a power of the probability); it is not a published distillation method.

    The wrapped loss's temperature (if any) is exposed as `temperature`, so
    the `Distiller` logs it and `kerasdistill.callbacks.TemperatureScheduler`
    drives it.

    Args:
        loss: A `kerasdistill.DistillationLoss` returning one value per
            sample (e.g. `LogitsDistillation`), or a `keras.distillation`
            loss that kerasdistill translates into one.
        beta: Overall weight, >= 0. Defaults to 1.0.
        scale: Strength of the re-weighting, in [-1, 1] so that weights stay
            >= 0. Defaults to 0.3.
        momentum: Momentum of the running mean, in [0, 1); 0 uses the
            current batch mean. Defaults to 0.9.
        name: Optional name.

    Example:

    ```python
    loss = kerasdistill.DifficultyWeighted(
        kerasdistill.LogitsDistillation(temperature=4.0), beta=1.0, scale=0.3
    )
    distiller = kerasdistill.Distiller(teacher, student, loss)
    ```
    """

    def __init__(self, loss, beta=1.0, scale=0.3, momentum=0.9, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        loss = keras_compat.as_distillation_loss(loss)
        if isinstance(loss, keras_compat.KerasDistillationLoss):
            raise TypeError(
                "DifficultyWeighted needs one loss value per sample, so it "
                "wraps a kerasdistill.DistillationLoss. Received "
                f"{type(loss.loss).__name__}, which returns one value per batch. "
                "Subclass kerasdistill.DistillationLoss and return one value "
                "per sample from `call`."
            )
        checks.check_non_negative(beta, "beta")
        checks.check_number(scale, "scale")
        if not -1.0 <= scale <= 1.0:
            raise ValueError(
                f"Expected scale in [-1, 1] so that the weights stay >= 0. "
                f"Received: scale={scale}"
            )
        checks.check_number(momentum, "momentum")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"Expected momentum in [0, 1). Received: momentum={momentum}"
            )
        self.loss = loss
        self.beta = beta
        self.scale = scale
        self.momentum = momentum
        self.teacher_layer_name = loss.teacher_layer_name
        self.student_layer_name = loss.student_layer_name
        self.running_mean = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            aggregation="mean",
            name="running_mean",
        )
        self.updates = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
            name="updates",
        )

    @property
    def temperature(self):
        """The wrapped loss's temperature variable, or `None`."""
        return self.loss.temperature

    @temperature.setter
    def temperature(self, value):
        if self.loss.temperature is None:
            raise ValueError(
                "Expected the wrapped loss to have a temperature to set. "
                f"Received: temperature={value!r} for a wrapped "
                f"{type(self.loss).__name__}, which has none. Set the "
                "temperature of a loss that has one (e.g. LogitsDistillation)."
            )
        self.loss.temperature = value

    def call(
        self,
        teacher_outputs,
        student_outputs,
        y_true=None,
        training=None,
        inputs=None,
    ):
        values = self.loss.per_sample_loss(
            teacher_outputs,
            student_outputs,
            y_true=y_true,
            training=training,
            inputs=inputs,
        )
        batch_mean = ops.stop_gradient(ops.mean(values))
        if training:
            self.running_mean.assign(
                self.momentum * self.running_mean + (1.0 - self.momentum) * batch_mean
            )
            self.updates.assign_add(1.0)
        mean = ops.where(
            self.updates > 0,
            self.running_mean
            / ops.maximum(1.0 - ops.power(self.momentum, self.updates), 1e-12),
            batch_mean,
        )
        weights = self.beta * (
            1.0 + self.scale * ops.tanh(ops.stop_gradient(values) - mean)
        )
        return ops.stop_gradient(weights) * values

    def validate_outputs(self, teacher_outputs, student_outputs):
        self.loss.validate_outputs(teacher_outputs, student_outputs)

    def validate_model_compatibility(self, teacher, student):
        self.loss.validate_model_compatibility(teacher, student)

    def build_for(self, teacher, student):
        self.loss.build_for(teacher, student)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "loss": keras.saving.serialize_keras_object(self.loss),
                "beta": self.beta,
                "scale": self.scale,
                "momentum": self.momentum,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)
