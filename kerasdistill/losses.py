"""Distillation losses: the base class, the logit (Hinton) loss and the
regression losses, each as a class and as a per-sample function.

A distillation loss compares the teacher's outputs with the student's and
returns one value per sample. The `Distiller` weights those values by
`sample_weight` (and `class_weight`) and reduces them the way a Keras loss
does (`"sum_over_batch_size"`, scaled for the replicas of a distribution
strategy), so the distillation term and the student's own loss are on the
same footing.
"""

import inspect

import keras
from keras import ops
from keras import tree

from kerasdistill import checks
from kerasdistill import reduction


@keras.saving.register_keras_serializable(package="kerasdistill")
class DistillationLoss(keras.layers.Layer):
    """Base class of the kerasdistill distillation losses.

    Subclasses implement `call(teacher_outputs, student_outputs)` and return
    one loss value per sample (shape `(batch,)`); a `call` that also takes
    `y_true` receives the labels (or `None` on a transfer set without them),
    and one that takes `training` receives whether the step trains (to
    update running statistics only then, as `DifficultyWeighted` does).
    A `call` that returns one value for the whole batch (a plain mean) is
    accepted without sample weights, and counted once under a distribution
    strategy, not once per replica.
    A loss is a Keras `Layer` so that its state (a temperature variable, a
    learned adapter) is tracked, trained and saved with the `Distiller`. It is
    never called as a layer: the `Distiller` calls `compute_loss`, which
    casts the inputs to float32 (so the math stays in float32 under
    `mixed_float16`), applies the sample weights and reduces.

    Set `teacher_layer_name` / `student_layer_name` to compare intermediate
    layer outputs instead of the final outputs.

    Example:

    ```python
    class L1Distillation(kerasdistill.DistillationLoss):
        def call(self, teacher_outputs, student_outputs):
            return keras.ops.mean(
                keras.ops.abs(teacher_outputs - student_outputs), axis=-1
            )

    distiller = kerasdistill.Distiller(teacher, student, L1Distillation())
    ```
    """

    teacher_layer_name = None
    student_layer_name = None

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.built = True

    def call(self, teacher_outputs, student_outputs):
        raise NotImplementedError(
            f"{type(self).__name__} must implement "
            "`call(teacher_outputs, student_outputs)` returning one loss "
            "value per sample."
        )

    def compute_loss(
        self,
        teacher_outputs,
        student_outputs,
        sample_weight=None,
        y_true=None,
        training=None,
    ):
        """Returns the scalar loss, weighted by `sample_weight` and reduced.

        Args:
            teacher_outputs: The teacher's outputs (or tapped features).
            student_outputs: The student's outputs (or tapped features).
            sample_weight: Optional per-sample weights, shape `(batch,)`.
            y_true: The labels, passed to a `call` that accepts `y_true`.
            training: Whether this is a training step, passed to a `call`
                that accepts `training` (e.g. to update running statistics).

        Returns:
            A float32 scalar tensor.
        """
        values = self.per_sample_loss(
            teacher_outputs, student_outputs, y_true=y_true, training=training
        )
        values = ops.convert_to_tensor(values, dtype="float32")
        if len(values.shape) == 0:
            return self._batch_value(values, sample_weight)
        return reduction.weighted_mean(values, sample_weight)

    def per_sample_loss(
        self, teacher_outputs, student_outputs, y_true=None, training=None
    ):
        """Returns the loss of each sample, shape `(batch,)`, in float32.

        Casts the outputs to float32 and calls `call` with the `y_true` and
        `training` arguments it accepts.
        """
        arguments = _call_arguments(self)
        kwargs = {}
        if "y_true" in arguments:
            kwargs["y_true"] = y_true
        if "training" in arguments:
            kwargs["training"] = training
        return self.call(
            _to_float32(teacher_outputs), _to_float32(student_outputs), **kwargs
        )

    def _batch_value(self, value, sample_weight):
        """A `call` that returned one value for the batch (e.g. a plain
        mean): it counts once, not once per replica of a strategy."""
        if sample_weight is not None:
            raise ValueError(
                f"Expected {type(self).__name__}.call to return one loss "
                "value per sample, shape (batch,), to apply the "
                "`sample_weight` / `class_weight` given to fit(). Received "
                "one value for the whole batch, shape (). Return per-sample "
                "values, or fit without sample weights."
            )
        return reduction.scale_for_replicas(value)

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Raises a `ValueError` when the outputs cannot be compared."""
        checks.check_same_structure(
            teacher_outputs, student_outputs, type(self).__name__
        )

    def validate_model_compatibility(self, teacher, student):
        """Raises a `ValueError` before training when this loss cannot
        compare `teacher` with `student`."""


def _call_arguments(loss):
    return inspect.signature(loss.call).parameters


def _to_float32(structure):
    return tree.map_structure(lambda x: ops.cast(x, "float32"), structure)


def _sum_over_outputs(per_output_fn, spec, teacher, student, y_true=None):
    """Applies `per_output_fn(spec, t, s, y)` to every output and sums.

    `spec` is either one value used for every output, or a structure that
    matches the outputs, with `None` to skip an output.
    """
    spec = _untracked(spec)
    if tree.is_nested(spec):
        checks.check_same_structure(spec, teacher, "the `loss` structure")
        specs = tree.flatten(spec)
    else:
        specs = [spec] * len(tree.flatten(teacher))
    teacher, student = tree.flatten(teacher), tree.flatten(student)
    labels = tree.flatten(y_true) if y_true is not None else [None] * len(specs)
    values = [
        per_output_fn(s, t, p, y)
        for s, t, p, y in zip(specs, teacher, student, labels)
        if s is not None
    ]
    return values[0] if len(values) == 1 else ops.sum(ops.stack(values), 0)


def _untracked(spec):
    """Turns the lists and dicts that a Layer wraps for tracking back into
    plain ones, so that their structure compares with the outputs'."""
    if isinstance(spec, dict):
        return {key: _untracked(value) for key, value in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [_untracked(value) for value in spec]
    return spec


def _flat_specs(spec):
    return [s for s in tree.flatten(spec) if s is not None]


def logits_kl_divergence(teacher_logits, student_logits, temperature=3.0):
    """Per-sample Hinton distillation loss: `T^2 * KL(p_t || p_s)`.

    `p_t = softmax(teacher_logits / T)` and `p_s = softmax(student_logits /
    T)`, over the last axis, computed with log-softmax for stability. The
    `T^2` factor keeps the gradient scale independent of `T`.

    Args:
        teacher_logits: Teacher logits, shape `(batch, classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0` (a float or a variable).

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    loss = kerasdistill.losses.logits_kl_divergence(t, s, temperature=4.0)
    ```

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
        Network", 2015. https://arxiv.org/abs/1503.02531
    """
    log_p_t = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_p_s = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return kl * ops.square(temperature)


def logits_soft_cross_entropy(teacher_logits, student_logits, temperature=3.0):
    """Per-sample soft-target cross-entropy: `-T^2 * sum(p_t * log p_s)`.

    It differs from `logits_kl_divergence` by the teacher's entropy, a
    constant for the student, so both give the same gradients; this is the
    form written in Hinton et al. (2015).

    Args:
        teacher_logits: Teacher logits, shape `(batch, classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    loss = kerasdistill.losses.logits_soft_cross_entropy(t, s, 4.0)
    ```

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
        Network", 2015. https://arxiv.org/abs/1503.02531
    """
    p_t = ops.softmax(teacher_logits / temperature, axis=-1)
    log_p_s = ops.log_softmax(student_logits / temperature, axis=-1)
    return -ops.sum(p_t * log_p_s, axis=-1) * ops.square(temperature)


_LOGITS_LOSSES = {
    "kl_divergence": logits_kl_divergence,
    "soft_cross_entropy": logits_soft_cross_entropy,
}


class TemperedLoss(DistillationLoss):
    """Base of the losses that soften logits by a temperature.

    The temperature is a non-trainable `keras.Variable`: assigning
    `loss.temperature = 2.0` (or a `TemperatureScheduler`) changes the loss
    inside a compiled train function without tracing it again.

    Args:
        temperature: A number > 0.
        name: Optional name.

    Example:

    ```python
    class Tempered(kerasdistill.losses.TemperedLoss):
        def call(self, teacher_outputs, student_outputs):
            return kerasdistill.losses.logits_kl_divergence(
                teacher_outputs, student_outputs, self.temperature
            )
    ```
    """

    def __init__(self, temperature, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        checks.check_positive(temperature, "temperature")
        self._temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(temperature)),
            trainable=False,
            dtype="float32",
            name="temperature",
        )

    @property
    def temperature(self):
        """The temperature variable; assign a number > 0 to change it."""
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        checks.check_positive(value, "temperature")
        self._temperature.assign(float(value))

    def get_config(self):
        config = super().get_config()
        config["temperature"] = float(ops.convert_to_numpy(self._temperature))
        return config


@keras.saving.register_keras_serializable(package="kerasdistill")
class LogitsDistillation(TemperedLoss):
    """Hinton knowledge distillation on the final outputs.

    The student matches the teacher's temperature-softened class
    distribution: `T^2 * KL(softmax(t / T) || softmax(s / T))` per sample,
    or the soft cross-entropy with `loss="soft_cross_entropy"` (same
    gradients). Unlike Keras 3.15's `keras.distillation.LogitsDistillation`,
    the default `loss="kl_divergence"` is applied to the softened
    probabilities, not to the raw scaled logits.

    The temperature is a non-trainable `keras.Variable`: assigning
    `loss.temperature = 2.0` (or a `TemperatureScheduler`) changes the loss
    inside a compiled train function without tracing it again.

    Args:
        temperature: Softmax temperature, a number > 0. Defaults to 3.0.
        loss: `"kl_divergence"` or `"soft_cross_entropy"`; for a model with
            several outputs, a structure of those matching the outputs, with
            `None` to skip an output.
        from_logits: `True` when the models output logits; `False` when they
            end with a softmax (their log-probabilities are then used as
            logits).
        name: Optional name.

    Example:

    ```python
    distiller = kerasdistill.Distiller(
        teacher, student,
        distillation_losses=kerasdistill.LogitsDistillation(temperature=4.0),
    )
    ```

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
        Network", 2015. https://arxiv.org/abs/1503.02531
    """

    def __init__(
        self,
        temperature=3.0,
        loss="kl_divergence",
        from_logits=True,
        name=None,
        **kwargs,
    ):
        super().__init__(temperature, name=name, **kwargs)
        for spec in _flat_specs(loss):
            checks.check_choice(spec, _LOGITS_LOSSES, "loss")
        if not _flat_specs(loss):
            raise ValueError(
                "Expected at least one non-None entry in `loss`. "
                f"Received: loss={loss!r}"
            )
        self.loss = loss
        self.from_logits = from_logits

    def call(self, teacher_outputs, student_outputs):
        def per_output(spec, teacher, student, _):
            if not self.from_logits:
                teacher = ops.log(ops.maximum(teacher, 1e-12))
                student = ops.log(ops.maximum(student, 1e-12))
            return _LOGITS_LOSSES[spec](teacher, student, self._temperature)

        return _sum_over_outputs(
            per_output, self.loss, teacher_outputs, student_outputs
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        checks.check_same_last_dim(
            teacher_outputs, student_outputs, "classes", type(self).__name__
        )

    def validate_model_compatibility(self, teacher, student):
        checks.check_model_outputs_comparable(
            teacher, student, "classes", type(self).__name__
        )
        if self.from_logits:
            checks.check_outputs_are_logits(teacher, "teacher")
            checks.check_outputs_are_logits(student, "student")

    def get_config(self):
        config = super().get_config()
        config.update({"loss": self.loss, "from_logits": self.from_logits})
        return config


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


def _mse(teacher, student):
    return ops.mean(ops.square(student - teacher), axis=-1)


def _mae(teacher, student):
    return ops.mean(ops.abs(student - teacher), axis=-1)


def _huber(teacher, student, delta):
    error = ops.abs(student - teacher)
    quadratic = ops.minimum(error, delta)
    linear = error - quadratic
    return ops.mean(0.5 * ops.square(quadratic) + delta * linear, axis=-1)


_REGRESSION_LOSSES = ("mse", "mae", "huber", "teacher_bounded")


@keras.saving.register_keras_serializable(package="kerasdistill")
class RegressionDistillation(DistillationLoss):
    """The student imitates the teacher's continuous outputs.

    `loss` is one of:
    - `"mse"`, `"mae"`, `"huber"` (with `delta`): the distance between the
      student's and the teacher's predictions, averaged over the last axis;
    - `"teacher_bounded"` (with `margin`): Chen et al.'s bounded loss, which
      penalises the student only where its squared error to the labels
      exceeds the teacher's by more than `margin`; it needs labels.

    Args:
        loss: One of `"mse"`, `"mae"`, `"huber"`, `"teacher_bounded"`.
        delta: Huber threshold, > 0. Defaults to 1.0.
        margin: Margin of `"teacher_bounded"`, >= 0. Defaults to 0.0.
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

    def __init__(self, loss="mse", delta=1.0, margin=0.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        checks.check_choice(loss, _REGRESSION_LOSSES, "loss")
        checks.check_positive(delta, "delta")
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
                return _mse(teacher, student)
            if self.loss == "mae":
                return _mae(teacher, student)
            if self.loss == "huber":
                return _huber(teacher, student, self.delta)
            return teacher_bounded_regression(
                labels, teacher, student, self.margin
            )

        return _sum_over_outputs(
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
        config.update(
            {"loss": self.loss, "delta": self.delta, "margin": self.margin}
        )
        return config
