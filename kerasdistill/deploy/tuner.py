"""KerasTuner search of a distillation: alpha, temperature, loss weights and
the student's architecture, around one teacher shared by every trial.

This module imports `keras_tuner`; `import kerasdistill` does not, and
`kerasdistill.DistillerHyperModel` imports this module on first use.
"""

import numbers
import weakref

import keras

from kerasdistill import checks
from kerasdistill.deploy import trial
from kerasdistill.losses import base as losses_base
from kerasdistill.losses import keras_compat
from kerasdistill.losses import logits

try:
    import keras_tuner
except ImportError as error:  # See test_import_without_keras_tuner.
    raise ImportError(
        "kerasdistill.DistillerHyperModel needs KerasTuner, which is not "
        "installed. Install it with `pip install 'kerasdistill[tuner]'` "
        "(or `pip install keras-tuner`)."
    ) from error


class DistillerHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` whose models are distillers of one teacher.

    Each trial builds a fresh student (from `student`), fresh distillation
    losses and a `Distiller` around the *same* `teacher` object, then
    compiles it. The teacher is frozen, never retrained nor copied: the
    trial models' weight checkpoints leave it out (see
    `kerasdistill.deploy.trial.TrialDistiller`), so resuming a search or calling
    `get_best_models()` only needs this HyperModel, built again with the
    same teacher.

    `alpha`, `temperature` and each entry of `distillation_loss_weights` is
    a search-space spec:

    - `None`: not searched (the Distiller's or the loss's own value);
    - a number: fixed (`hp.Fixed`, recorded in each trial);
    - a tuple `(min_value, max_value)`: `hp.Float`, linear sampling;
    - a list of numbers: `hp.Choice`;
    - a dict: the keyword arguments of `hp.Float` (e.g.
      `{"min_value": 1.0, "max_value": 16.0, "sampling": "log"}`).

    The hyperparameters are named `alpha`, `temperature` (shared by every
    distillation loss with a temperature) and `distillation_loss_weight_{i}`.
    Tune the student's architecture inside `student(hp)`.

    Rank trials by the student's own loss on the validation labels,
    `objective=keras_tuner.Objective("val_student_loss", direction="min")`,
    or by any student metric given in `metrics` (`"val_accuracy"`,
    `"val_mae"`, ...): `val_loss` is the
    distillation objective, which depends on the trial's alpha and
    temperature, so it cannot rank trials.

    Args:
        teacher: The trained teacher, a `keras.Model`; shared by all trials.
        student: A function `student(hp)` returning a new, uncompiled
            `keras.Model` (it may tune the width with `hp.Int`), or a
            `keras.Model` that is cloned with fresh weights for each trial
            (`keras.models.clone_model`).
        distillation_losses: A distillation loss or a list of them, copied
            for each trial; or a function `distillation_losses(hp)` returning
            new ones. Defaults to `kerasdistill.LogitsDistillation()`.
        alpha: Search-space spec of `student_loss_weight`, in [0, 1].
            Defaults to `(0.1, 0.9)`.
        temperature: Search-space spec of the temperature, > 0. Defaults to
            `(1.0, 8.0)`. Needs at least one loss with a `temperature`.
        distillation_loss_weights: `None`, or a list with one spec (>= 0)
            per distillation loss.
        optimizer: An optimizer name or instance, copied for each trial.
        loss: The student's supervised loss, as in `Distiller.compile()`.
        metrics: The student's metrics, copied for each trial.
        name: Optional name of the HyperModel.
        tunable: Whether the hyperparameters defined here are added to the
            search space (see `keras_tuner.HyperModel`).

    Example:

    ```python
    def build_student(hp):
        width = hp.Int("width", 8, 64, step=8)
        inputs = keras.Input((64,))
        hidden = keras.layers.Dense(width, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(10)(hidden))

    hypermodel = kerasdistill.DistillerHyperModel(
        teacher, build_student,
        alpha=(0.05, 0.95),
        temperature={"min_value": 1.0, "max_value": 16.0, "sampling": "log"},
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective="val_accuracy", max_trials=20,
        directory="runs", project_name="kd",
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=10)
    best = tuner.get_best_models()[0]
    kerasdistill.export_student(best, "student.tflite", format="tflite")
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses=None,
        alpha=(0.1, 0.9),
        temperature=(1.0, 8.0),
        distillation_loss_weights=None,
        optimizer="adam",
        loss=None,
        metrics=None,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        checks.check_model(teacher, "teacher")
        if not isinstance(student, keras.Model) and not callable(student):
            raise TypeError(
                "Expected `student` to be a function `student(hp)` returning "
                "a new keras.Model, or a keras.Model to clone for each trial. "
                f"Received: student={student!r} of type "
                f"{type(student).__name__}"
            )
        if distillation_losses is None:
            distillation_losses = logits.LogitsDistillation()
        _check_spec(alpha, "alpha", checks.check_unit_interval)
        _check_spec(temperature, "temperature", checks.check_positive)
        if distillation_loss_weights is not None:
            if not isinstance(distillation_loss_weights, (list, tuple)):
                raise TypeError(
                    "Expected `distillation_loss_weights` to be None or a list "
                    "with one search-space spec per distillation loss. "
                    f"Received: {distillation_loss_weights!r}"
                )
            for i, spec in enumerate(distillation_loss_weights):
                _check_spec(
                    spec,
                    f"distillation_loss_weights[{i}]",
                    checks.check_non_negative,
                )
        self.teacher = teacher
        self.student = student
        self.distillation_losses = distillation_losses
        self.alpha = alpha
        self.temperature = temperature
        self.distillation_loss_weights = distillation_loss_weights
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = metrics
        self._students = weakref.WeakSet()

    def build(self, hp):
        """Returns a compiled `TrialDistiller` for the values in `hp`."""
        student = self._build_student(hp)
        distillation_losses = self._build_losses(hp)
        temperature = _hp_value(hp, "temperature", self.temperature)
        if temperature is not None:
            tempered = [
                loss for loss in distillation_losses if loss.temperature is not None
            ]
            if not tempered:
                raise ValueError(
                    "Expected a distillation loss with a temperature to tune "
                    f"`temperature`. Received: temperature={self.temperature!r} "
                    "with losses "
                    f"{[type(loss).__name__ for loss in distillation_losses]}. "
                    "Pass temperature=None, or add a LogitsDistillation."
                )
            for loss in tempered:
                loss.temperature = temperature
        kwargs = {}
        alpha = _hp_value(hp, "alpha", self.alpha)
        if alpha is not None:
            kwargs["student_loss_weight"] = alpha
        weights = self._loss_weights(hp, len(distillation_losses))
        if weights is not None:
            kwargs["distillation_loss_weights"] = weights
        distiller = trial.TrialDistiller(
            self.teacher, student, distillation_losses, **kwargs
        )
        distiller.compile(
            optimizer=_copy_optimizer(self.optimizer),
            loss=self.loss,
            metrics=_copy_metrics(self.metrics),
        )
        if distiller.built:
            # Creates the optimizer's slots now, so that loading a checkpoint
            # (get_best_models, Hyperband's follow-up trials) restores them.
            distiller.optimizer.build(distiller.trainable_variables)
        return distiller

    def _build_student(self, hp):
        if isinstance(self.student, keras.Model):
            return keras.models.clone_model(self.student)
        student = self.student(hp)
        if not isinstance(student, keras.Model):
            raise TypeError(
                "Expected `student(hp)` to return a keras.Model. Received: "
                f"{student!r} of type {type(student).__name__}"
            )
        if student is self.teacher or student in self._students:
            raise ValueError(
                "Expected `student(hp)` to build a new model at each call, but "
                "it returned "
                + (
                    "the teacher"
                    if student is self.teacher
                    else "a model it returned before"
                )
                + ", which the trials would share. Build the keras.Model "
                "inside the function, or pass a model as `student` to have it "
                "cloned for each trial."
            )
        self._students.add(student)
        return student

    def _build_losses(self, hp):
        spec = self.distillation_losses
        if callable(spec) and not hasattr(spec, "compute_loss"):
            built = spec(hp)
            built = list(built) if isinstance(built, (list, tuple)) else [built]
            return [keras_compat.as_distillation_loss(loss) for loss in built]
        given = spec if isinstance(spec, (list, tuple)) else [spec]
        return [_copy_loss(keras_compat.as_distillation_loss(loss)) for loss in given]

    def _loss_weights(self, hp, count):
        specs = self.distillation_loss_weights
        if specs is None:
            return None
        if len(specs) != count:
            raise ValueError(
                f"Expected one distillation loss weight spec per loss ({count}). "
                f"Received {len(specs)}: distillation_loss_weights={specs!r}"
            )
        weights = [
            _hp_value(hp, f"distillation_loss_weight_{i}", spec)
            for i, spec in enumerate(specs)
        ]
        return [1.0 if w is None else w for w in weights]


def _check_spec(spec, name, check):
    if spec is None:
        return
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(
                f"Expected `{name}` as a (min_value, max_value) tuple. "
                f"Received: {name}={spec!r}"
            )
        for value in spec:
            check(value, name)
        if spec[0] >= spec[1]:
            raise ValueError(
                f"Expected min_value < max_value in `{name}`. Received: {name}={spec!r}"
            )
    elif isinstance(spec, list):
        if not spec:
            raise ValueError(f"Expected a non-empty list of values for `{name}`.")
        for value in spec:
            check(value, name)
    elif isinstance(spec, dict):
        missing = {"min_value", "max_value"} - set(spec)
        if missing:
            raise ValueError(
                f"Expected the dict `{name}` to hold the keyword arguments of "
                f"hp.Float, with min_value and max_value. Missing: "
                f"{sorted(missing)}. Received: {name}={spec!r}"
            )
        check(spec["min_value"], name)
        check(spec["max_value"], name)
    elif isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        check(spec, name)
    else:
        raise TypeError(
            f"Expected `{name}` to be None, a number, a (min, max) tuple, a "
            "list of values or a dict of hp.Float arguments. Received: "
            f"{name}={spec!r} of type {type(spec).__name__}"
        )


def _hp_value(hp, name, spec):
    if spec is None:
        return None
    if isinstance(spec, tuple):
        return hp.Float(name, min_value=spec[0], max_value=spec[1])
    if isinstance(spec, list):
        return hp.Choice(name, [float(value) for value in spec])
    if isinstance(spec, dict):
        return hp.Float(name, **spec)
    return hp.Fixed(name, float(spec))


def _copy_loss(loss):
    """A new loss with the same configuration (and fresh state) for a trial."""
    return losses_base.copy_loss(
        loss,
        fix="Pass `distillation_losses` as a function "
        "`distillation_losses(hp)` that returns new losses.",
    )


def _copy_optimizer(optimizer):
    if isinstance(optimizer, str):
        return optimizer
    return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))


def _copy_metrics(metrics):
    def copy(metric):
        if isinstance(metric, keras.metrics.Metric):
            return keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(metric)
            )
        return metric

    return None if metrics is None else keras.tree.map_structure(copy, metrics)
