"""Regression distillation: the student imitates the teacher's continuous
outputs, or is bounded by the teacher's error (Chen et al. 2017)."""

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill.losses import base


def teacher_bounded_regression(y_true, teacher_pred, student_pred, margin=0.0):
    """Per-sample teacher-bounded regression loss (Chen et al. 2017).

    `||s - y||^2` where the student's squared error plus `margin` exceeds the
    teacher's squared error `||t - y||^2`, else 0: the teacher is an upper
    bound the student must reach, not a target to copy. Norms are over the
    last axis.

    Args:
        y_true: Labels, shape `(batch, outputs)` or `(batch,)`.
        teacher_pred: Teacher predictions, shape `(batch, outputs)`.
        student_pred: Student predictions, same shape.
        margin: The margin `m >= 0`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    loss = kerasdistill.losses.teacher_bounded_regression(y, t, s, 0.1)
    ```

    Reference:
        Chen et al., "Learning Efficient Object Detection Models with
        Knowledge Distillation", NeurIPS 2017 (eq. 3).
    """
    teacher_pred = ops.convert_to_tensor(teacher_pred)
    student_pred = ops.convert_to_tensor(student_pred)
    y_true = ops.cast(y_true, student_pred.dtype)
    if len(y_true.shape) == len(student_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    student_error = ops.sum(ops.square(student_pred - y_true), axis=-1)
    teacher_error = ops.sum(ops.square(teacher_pred - y_true), axis=-1)
    return ops.where(
        student_error + margin > teacher_error,
        student_error,
        ops.zeros_like(student_error),
    )


_REGRESSION_LOSSES = ("mse", "mae", "huber", "teacher_bounded")


@keras.saving.register_keras_serializable(package="kerasdistill")
class RegressionDistillation(base.DistillationLoss):
    """The student imitates the teacher's continuous outputs.

    `loss` is one of:
    - `"mse"`, `"mae"`, `"huber"` (with `delta`): the distance between the
      student's and the teacher's predictions, averaged over the last axis;
    - `"teacher_bounded"` (with `margin`): Chen et al.'s bounded loss, which
      penalises the student only where its squared error to the labels
      exceeds the teacher's by more than `margin`; it needs labels.

    Args:
        loss: One of `"mse"`, `"mae"`, `"huber"`, `"teacher_bounded"`.
        delta: Huber threshold, > 0, `loss="huber"` only. Defaults to 1.0
            there.
        margin: Margin of `"teacher_bounded"`, >= 0, that loss only.
            Defaults to 0.0 there.
        name: Optional name.

    Example:

    ```python
    distiller = kerasdistill.Distiller(
        teacher, student,
        distillation_losses=kerasdistill.RegressionDistillation("huber"),
    )
    distiller.compile(optimizer="adam", loss="mse", metrics=["mae"])
    ```

    Reference:
        Chen et al., "Learning Efficient Object Detection Models with
        Knowledge Distillation", NeurIPS 2017 (teacher-bounded loss).
    """

    def __init__(self, loss="mse", delta=None, margin=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        checks.check_choice(loss, _REGRESSION_LOSSES, "loss")
        for value, argument, owner in (
            (delta, "delta", "huber"),
            (margin, "margin", "teacher_bounded"),
        ):
            if value is not None and loss != owner:
                raise ValueError(
                    f"Expected `{argument}` only with loss={owner!r}, which "
                    f"uses it. Received: {argument}={value!r} with "
                    f"loss={loss!r}. Drop `{argument}`, or pass "
                    f"loss={owner!r}."
                )
        if loss == "huber":
            delta = 1.0 if delta is None else delta
            checks.check_positive(delta, "delta")
        if loss == "teacher_bounded":
            margin = 0.0 if margin is None else margin
            checks.check_non_negative(margin, "margin")
        self.loss = loss
        self.delta = delta
        self.margin = margin

    def call(self, teacher_outputs, student_outputs, y_true=None):
        if self.loss == "teacher_bounded" and y_true is None:
            raise ValueError(
                'RegressionDistillation(loss="teacher_bounded") needs labels '
                "to bound the student by the teacher's error. Received a "
                "batch without labels. Pass `y` to `fit()`, or use "
                'loss="mse" / "mae" / "huber" on a transfer set.'
            )

        def per_output(_, teacher, student, labels):
            if self.loss == "mse":
                return keras.losses.mean_squared_error(teacher, student)
            if self.loss == "mae":
                return keras.losses.mean_absolute_error(teacher, student)
            if self.loss == "huber":
                return keras.losses.huber(teacher, student, delta=self.delta)
            return teacher_bounded_regression(labels, teacher, student, self.margin)

        return base.sum_over_outputs(
            per_output, self.loss, teacher_outputs, student_outputs, y_true
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        checks.check_same_last_dim(
            teacher_outputs, student_outputs, "outputs", type(self).__name__
        )

    def validate_model_compatibility(self, teacher, student):
        checks.check_model_outputs_comparable(
            teacher, student, "outputs", type(self).__name__
        )

    def get_config(self):
        config = super().get_config()
        config.update({"loss": self.loss, "delta": self.delta, "margin": self.margin})
        return config

    @classmethod
    def from_config(cls, config):
        """Also reads kerasdistill 0.1.0's configs, which saved the default
        `delta=1.0` and `margin=0.0` whatever the loss."""
        config = dict(config)
        if config.get("loss") != "huber" and config.get("delta") == 1.0:
            config["delta"] = None
        if config.get("loss") != "teacher_bounded" and config.get("margin") == 0.0:
            config["margin"] = None
        return cls(**config)
