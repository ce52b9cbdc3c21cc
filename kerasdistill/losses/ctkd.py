"""Curriculum temperature knowledge distillation (CTKD): a learnable
temperature trained adversarially through a gradient-reversal layer."""

import math

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill.losses import base
from kerasdistill.losses import logits


def gradient_reversal(x, strength):
    """Identity in the forward pass; the gradient times `-strength` in the
    backward pass, on every backend (`stop_gradient` arithmetic).

    `stop_gradient((1 + s) * x) - s * x` equals `x`, and only `-s * x`
    carries a gradient.

    Args:
        x: A tensor.
        strength: `lambda >= 0` (a float or a non-trainable variable).

    Returns:
        `x`, whose gradient is reversed and scaled by `strength`.

    Example:

    ```python
    y = kerasdistill.losses.gradient_reversal(x, 1.0)
    ```

    Reference:
        Ganin & Lempitsky, "Unsupervised Domain Adaptation by
        Backpropagation", ICML 2015. https://arxiv.org/abs/1409.7495
    """
    x = ops.convert_to_tensor(x)
    strength = ops.stop_gradient(ops.cast(strength, x.dtype))
    return ops.stop_gradient((1.0 + strength) * x) - strength * x


@keras.saving.register_keras_serializable(package="kerasdistill")
class CTKD(base.DistillationLoss):
    """Hinton KD whose temperature is learned to make distillation harder,
    more so as training goes on.

    The temperature `T = min_temperature + (max_temperature -
    min_temperature) * sigmoid(theta)` is a trainable parameter of the
    loss, trained by the Distiller's optimizer through a gradient-reversal
    layer: the student minimizes `T^2 * KL(softmax(t / T) || softmax(s /
    T))` while `T` maximizes it, scaled by the reversal strength `lambda`.
    The curriculum raises `lambda` over the epochs (easy to hard), with
    `kerasdistill.recipes.curriculum_temperature` (a cosine ramp 0 -> 1,
    a `kerasdistill.callbacks.GradientReversalScheduler`). The current
    temperature is logged as `temperature` at each epoch.

    This is the paper's global temperature (one scalar); its instance-wise
    variant (a temperature per sample, from a small network) is not
    provided.

    Args:
        initial_temperature: The temperature before training, strictly
            between the bounds. Defaults to 4.0.
        min_temperature: The lowest temperature, > 0. Defaults to 1.0
            (the paper's code: `T = 1 + 20 * sigmoid(theta)`).
        max_temperature: The highest temperature. Defaults to 21.0.
        reversal_strength: `lambda >= 0` before any schedule sets it.
            Defaults to 1.0; 0 keeps the temperature fixed.
        name: Optional name.

    Example:

    ```python
    distiller = kerasdistill.Distiller(teacher, student, kerasdistill.CTKD())
    distiller.compile("adam", "sparse_categorical_crossentropy")
    distiller.fit(
        x, y, epochs=40,
        callbacks=[kerasdistill.recipes.curriculum_temperature(ramp_epochs=10)],
    )
    ```

    Reference:
        Li, Li, Yang, Xiang, Jiang, Wang & Yang, "Curriculum Temperature for
        Knowledge Distillation", AAAI 2023 (eqs. 6-11).
        https://arxiv.org/abs/2211.16231
    """

    learns_temperature = True  # logged by the Distiller, not scheduled

    def __init__(
        self,
        initial_temperature=4.0,
        min_temperature=1.0,
        max_temperature=21.0,
        reversal_strength=1.0,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        checks.check_positive(min_temperature, "min_temperature")
        checks.check_number(max_temperature, "max_temperature")
        checks.check_number(initial_temperature, "initial_temperature")
        if not min_temperature < initial_temperature < max_temperature:
            raise ValueError(
                "Expected min_temperature < initial_temperature < "
                f"max_temperature. Received: min_temperature={min_temperature}, "
                f"initial_temperature={initial_temperature}, max_temperature="
                f"{max_temperature}."
            )
        checks.check_non_negative(reversal_strength, "reversal_strength")
        self.initial_temperature = initial_temperature
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        share = (initial_temperature - min_temperature) / (
            max_temperature - min_temperature
        )
        self._theta = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(share / (1.0 - share))),
            trainable=True,
            dtype="float32",
            name="temperature_logit",
        )
        self._reversal_strength = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(reversal_strength)),
            trainable=False,
            dtype="float32",
            name="reversal_strength",
        )

    @property
    def temperature(self):
        """The current temperature, a scalar tensor (learned: not assignable)."""
        return self._temperature_of(ops.convert_to_tensor(self._theta))

    @property
    def reversal_strength(self):
        """`lambda`, a variable; assign a number >= 0 to change it."""
        return self._reversal_strength

    @reversal_strength.setter
    def reversal_strength(self, value):
        checks.check_non_negative(value, "reversal_strength")
        self._reversal_strength.assign(float(value))

    def _temperature_of(self, theta):
        span = self.max_temperature - self.min_temperature
        return self.min_temperature + span * ops.sigmoid(theta)

    def call(self, teacher_outputs, student_outputs):
        theta = gradient_reversal(self._theta, self._reversal_strength)
        return logits.logits_kl_divergence(
            teacher_outputs, student_outputs, self._temperature_of(theta)
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        logits.SingleOutputLogitsLoss.validate_outputs(
            self, teacher_outputs, student_outputs
        )

    def validate_model_compatibility(self, teacher, student):
        logits.SingleOutputLogitsLoss.validate_model_compatibility(
            self, teacher, student
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_temperature": self.initial_temperature,
                "min_temperature": self.min_temperature,
                "max_temperature": self.max_temperature,
                "reversal_strength": float(
                    ops.convert_to_numpy(self._reversal_strength)
                ),
            }
        )
        return config
