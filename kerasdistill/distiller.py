"""The `Distiller`: a `keras.Model` that trains a student from a frozen
teacher with `compile()` / `fit()`."""

import inspect

import keras
import tensorflow as tf
from keras import ops
from keras import tree
from keras.src.losses.loss import unscale_loss_for_distribution

from kerasdistill import _training
from kerasdistill import cache
from kerasdistill import checks
from kerasdistill import compat
from kerasdistill import distribute
from kerasdistill import ensemble
from kerasdistill import taps


@keras.saving.register_keras_serializable(package="kerasdistill")
class Distiller(keras.Model):
    """Trains `student` to imitate a frozen `teacher` and fit the labels.

    The loss of a batch is

        alpha * student_loss + (1 - alpha) * sum_i(w_i * distillation_loss_i)

    plus the student's regularization losses, where `alpha` is
    `student_loss_weight`, `student_loss` is the `loss` given to `compile()`
    and `w_i` are `distillation_loss_weights`. On a batch without labels (a
    transfer set) the loss is the distillation term alone. Each training step
    runs the teacher once (`training=False`) and the student once, whatever
    layers the losses tap. `alpha`, the loss weights and every temperature
    are non-trainable variables: assigning them between epochs (or from a
    callback) takes effect without tracing the train function again.

    The constructor is that of `keras.distillation.Distiller`, and
    `keras.distillation` loss objects are accepted. `call()`, `predict()` and
    `evaluate()` use the student; the teacher is never updated (it is set
    non-trainable). `fit()` and `evaluate()` also take the dataset of
    `kerasdistill.cache_teacher_outputs`, on which the teacher does not run,
    and `evaluate_with_teacher = False` leaves the teacher out of evaluation.

    Several teachers may be given as a list: each runs once per step, and
    with `teacher_combination="average"` their outputs and tapped features
    are averaged (weighted by `teacher_weights`) before the losses, while
    with `"per_teacher"` each loss is computed against every teacher and
    the results are averaged by the same weights.

    Args:
        teacher: A trained `keras.Model`, or a list of them.
        student: The `keras.Model` to train.
        distillation_losses: A distillation loss or a list of them
            (`kerasdistill.LogitsDistillation`, `RegressionDistillation`,
            `FeatureDistillation`, `DKD`, `DIST`, a `DistillationLoss`
            subclass, or a `keras.distillation` loss).
        distillation_loss_weights: One weight >= 0 per loss. Defaults to 1.0
            each.
        student_loss_weight: `alpha`, in [0, 1]. Defaults to 0.5.
        teacher_weights: With several teachers, one weight >= 0 each
            (normalized to sum to 1). Defaults to equal weights.
        teacher_combination: `"average"` (default) or `"per_teacher"`.
        name: The model's name.
        **kwargs: Passed to `keras.Model`.

    Example:

    ```python
    distiller = kerasdistill.Distiller(
        teacher, student,
        distillation_losses=kerasdistill.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.1,
    )
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    distiller.fit(x_train, y_train, epochs=20)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        teacher_weights=None,
        teacher_combination="average",
        name="distiller",
        **kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "kerasdistill needs the TensorFlow backend of Keras. Received "
                f"backend '{keras.backend.backend()}'. Set the environment "
                "variable KERAS_BACKEND=tensorflow before importing keras."
            )
        super().__init__(name=name, **kwargs)
        teachers, teacher_weights = ensemble.check_teachers(
            teacher, teacher_weights, teacher_combination
        )
        checks.check_model(student, "student")
        checks.check_unit_interval(student_loss_weight, "student_loss_weight")
        distillation_losses = _as_list(distillation_losses, "distillation_losses")
        if distillation_loss_weights is None:
            distillation_loss_weights = [1.0] * len(distillation_losses)
        distillation_loss_weights = _as_list(
            distillation_loss_weights, "distillation_loss_weights"
        )
        if len(distillation_loss_weights) != len(distillation_losses):
            raise ValueError(
                "Expected one weight per distillation loss. Received "
                f"{len(distillation_losses)} distillation_losses and "
                f"{len(distillation_loss_weights)} "
                f"distillation_loss_weights={distillation_loss_weights}."
            )
        for weight in distillation_loss_weights:
            checks.check_non_negative(weight, "each distillation loss weight")
        for model in teachers:
            _check_same_inputs(model, student)

        self.teacher = teacher if len(teachers) == 1 else teachers
        self.student = student
        self.teacher_weights = teacher_weights
        self.teacher_combination = teacher_combination
        for model in teachers:
            model.trainable = False
        self.distillation_losses = [
            compat.as_distillation_loss(loss) for loss in distillation_losses
        ]
        for loss in self.distillation_losses:
            for model in teachers:
                loss.validate_model_compatibility(model, student)
        distribute.check_scope(teachers, student, self.distillation_losses)
        self._student_loss_weight = _training.non_trainable("student_loss_weight", student_loss_weight)
        self._distillation_loss_weights = [
            _training.non_trainable(f"distillation_loss_weight_{i}", weight)
            for i, weight in enumerate(distillation_loss_weights)
        ]
        self._networks = {
            "teacher": ensemble.teacher_network(
                teachers, _layer_names(self.distillation_losses, "teacher"),
                teacher_weights, teacher_combination,
            ),
            "student": taps.TappedNetwork(
                student, _layer_names(self.distillation_losses, "student"), "student"
            ),
        }
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        self._evaluate_with_teacher = True
        if student.built:
            self.built = True

    @property
    def teachers(self):
        """The teachers, as a list (of one for a single teacher)."""
        if isinstance(self.teacher, (list, tuple)):
            return list(self.teacher)
        return [self.teacher]

    student_loss_weight = _training.student_loss_weight

    @property
    def distillation_loss_weights(self):
        """The loss weight variables, one per distillation loss."""
        return list(self._distillation_loss_weights)

    @distillation_loss_weights.setter
    def distillation_loss_weights(self, values):
        values = _as_list(values, "distillation_loss_weights")
        if len(values) != len(self._distillation_loss_weights):
            raise ValueError(
                f"Expected {len(self._distillation_loss_weights)} weights. "
                f"Received: {values}"
            )
        for variable, value in zip(self._distillation_loss_weights, values):
            checks.check_non_negative(value, "each distillation loss weight")
            variable.assign(float(value))

    @property
    def evaluate_with_teacher(self):
        """Whether `evaluate()` (and validation in `fit()`) runs the teacher.

        `True` (the default) reports `loss` (the training objective),
        `student_loss` and `distillation_loss`. Set it to `False` when only
        the student's metrics are wanted: the teacher is skipped, `loss` is
        then the student's own loss on the labels plus its regularization
        losses (what `student.evaluate()` reports) and there is no
        `distillation_loss`. Labels are needed. Not saved with the model.
        """
        return self._evaluate_with_teacher

    @evaluate_with_teacher.setter
    def evaluate_with_teacher(self, value):
        if not isinstance(value, bool):
            raise TypeError(
                "Expected `evaluate_with_teacher` to be True or False. "
                f"Received: {value!r} of type {type(value).__name__}"
            )
        self._evaluate_with_teacher = value
        self.test_function = None  # traced again with the new setting

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training; `loss` and `metrics` apply to the student.

        `loss` may be omitted when training on inputs without labels, or when
        `student_loss_weight` is 0. When the student uses the
        `mixed_float16` policy, the optimizer is wrapped in a
        `keras.optimizers.LossScaleOptimizer`. Under a distribution strategy
        it runs in the Distiller's `strategy.scope()`, so it may be called
        outside it (an optimizer instance must then be created inside).

        Args:
            optimizer: An optimizer name or instance.
            loss: The student's supervised loss (name, instance, function).
            metrics: Metrics of the student's predictions.
            **kwargs: Passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, `weighted_metrics`, ...).

        Example:

        ```python
        distiller.compile(optimizer="adam", loss="mse", metrics=["mae"])
        ```
        """
        distribute.check_compile(self._distribute_strategy, kwargs)
        with distribute.scope(self._distribute_strategy):  # as tf.keras did
            optimizer = keras.optimizers.get(optimizer)
            distribute.check_optimizer(self._distribute_strategy, optimizer)
            if self.student.dtype_policy.name == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()` (used when loading)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; datasets of cached teacher outputs
        (`kerasdistill.cache_teacher_outputs`) are checked before training."""
        arguments = inspect.signature(super().fit).bind(*args, **kwargs).arguments
        for data in (arguments.get("x"), arguments.get("validation_data")):
            cache.check_dataset(data, self.teacher, self._networks["teacher"].layer_names)
        return super().fit(*args, **kwargs)

    def call(self, inputs, training=None):
        return self.student(cache.student_inputs(inputs), training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, teacher_taps = self._inputs_and_teacher_taps(x)
        with tf.GradientTape() as tape:
            student_taps = self._run("student", x, training=True)
            loss = self.compute_loss(
                x, y, student_taps[0], sample_weight, training=True,
                teacher_taps=teacher_taps, student_taps=student_taps,
            )
            self._loss_tracker.update_state(
                unscale_loss_for_distribution(loss), sample_weight=_training.batch_size(x)
            )
            loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        logs = self._metrics_logs(x, y, student_taps[0], sample_weight)
        logs.update(self._schedulable_values())
        return distribute.step_logs(self.distribute_strategy, logs)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not self._evaluate_with_teacher:
            return self._student_test_step(cache.student_inputs(x), y, sample_weight)
        x, teacher_taps = self._inputs_and_teacher_taps(x)
        student_taps = self._run("student", x, training=False)
        loss = self.compute_loss(
            x, y, student_taps[0], sample_weight, training=False,
            teacher_taps=teacher_taps, student_taps=student_taps,
        )
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(loss), sample_weight=_training.batch_size(x)
        )
        logs = self._metrics_logs(x, y, student_taps[0], sample_weight)
        return distribute.step_logs(self.distribute_strategy, logs)

    def compute_loss(
        self,
        x=None,
        y=None,
        y_pred=None,
        sample_weight=None,
        training=True,
        teacher_taps=None,
        student_taps=None,
    ):
        """Returns the total loss of a batch and updates the loss trackers.

        Args:
            x: The inputs.
            y: The labels, or `None` on a transfer set.
            y_pred: The student's outputs.
            sample_weight: Optional per-sample weights.
            training: Whether this is a training step.
            teacher_taps: `(outputs, features)` of the teacher on `x`;
                computed when `None`.
            student_taps: `(outputs, features)` of the student on `x`;
                computed when `None`.

        Returns:
            A float32 scalar tensor.
        """
        if teacher_taps is None:
            x, teacher_taps = self._inputs_and_teacher_taps(x)
        if student_taps is None:
            student_taps = self._run("student", x, training=training)
            y_pred = student_taps[0]
        distillation_loss = self._distillation_loss(
            teacher_taps, student_taps, y, sample_weight, training
        )
        if y is None:
            total = distillation_loss
        else:
            student_loss = self._student_loss(y, y_pred, sample_weight)
            alpha = self._student_loss_weight
            total = alpha * student_loss + (1.0 - alpha) * distillation_loss
            self.student_loss_tracker.update_state(
                unscale_loss_for_distribution(student_loss),
                sample_weight=_training.batch_size(x),
            )
        self.distillation_loss_tracker.update_state(
            unscale_loss_for_distribution(distillation_loss),
            sample_weight=_training.batch_size(x),
        )
        for regularization in self.student.losses:
            total = total + ops.cast(
                self._aggregate_additional_loss(regularization), "float32"
            )
        return total

    def _student_test_step(self, x, y, sample_weight):
        """The student's own loss and metrics, without the teacher."""
        if y is None:
            raise ValueError(
                "evaluate_with_teacher=False reports the student's loss and "
                "metrics on labels, but the data has none. Pass labels, or "
                "set distiller.evaluate_with_teacher = True."
            )
        y_pred = self.student(x, training=False)
        loss = ops.zeros((), dtype="float32")
        if self._compile_loss is not None:
            loss = ops.cast(self._compile_loss(y, y_pred, sample_weight), "float32")
            self.student_loss_tracker.update_state(
                unscale_loss_for_distribution(loss), sample_weight=_training.batch_size(x)
            )
        for regularization in self.student.losses:
            loss = loss + ops.cast(
                self._aggregate_additional_loss(regularization), "float32"
            )
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(loss), sample_weight=_training.batch_size(x)
        )
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        logs.pop(self.distillation_loss_tracker.name)
        if self._compile_loss is None:
            logs.pop(self.student_loss_tracker.name)
        return logs

    def _inputs_and_teacher_taps(self, x):
        """`(inputs, (teacher_outputs, features))`: read from a batch of
        `kerasdistill.cache_teacher_outputs`, else by running the teacher."""
        if cache.is_cached(x):
            return cache.read(
                x, self.teacher, self._networks["teacher"].layer_names, self.student
            )
        return x, self._run("teacher", x, training=False)

    def _run(self, role, x, training):
        network = self._networks[role]
        checks.check_dict_inputs(x, self.student, "student")
        try:
            taps_ = network(x, training=training)
        except (ValueError, TypeError) as error:
            if role != "teacher":
                raise
            raise ValueError(
                "Expected the teacher to accept the student's inputs, but "
                f"calling it on them failed: {error} Give both models the "
                "same inputs, or wrap the teacher in a model that maps the "
                "student's inputs to its own (e.g. resizing)."
            ) from error
        if role == "teacher":  # (outputs, features), or a list per teacher
            taps_ = tree.map_structure(ops.stop_gradient, taps_)
        return taps_

    def _student_loss(self, y, y_pred, sample_weight):
        if self._compile_loss is None:
            with tf.init_scope():  # Reads the variable eagerly while tracing.
                alpha = float(self._student_loss_weight.numpy())
            if alpha > 0:
                raise ValueError(
                    "Received labels, but compile() was given no `loss` for "
                    f"the student while student_loss_weight={alpha}. Pass a "
                    "loss to compile() (e.g. loss=keras.losses."
                    "SparseCategoricalCrossentropy(from_logits=True)), set "
                    "student_loss_weight=0, or fit on inputs without labels."
                )
            return ops.zeros((), dtype="float32")
        return ops.cast(self._compile_loss(y, y_pred, sample_weight), "float32")

    def _distillation_loss(
        self, teacher_taps, student_taps, y, sample_weight, training
    ):
        total = ops.zeros((), dtype="float32")
        parts = ensemble.weighted_parts(self._networks["teacher"], teacher_taps)
        for loss, weight in zip(
            self.distillation_losses, self._distillation_loss_weights
        ):
            student = _select(student_taps, getattr(loss, "student_layer_name", None))
            for teacher_weight, taps_ in parts:
                teacher = _select(taps_, getattr(loss, "teacher_layer_name", None))
                total = total + weight * teacher_weight * _training.distillation_value(
                    loss, teacher, student, y, sample_weight, training
                )
        return total

    def _metrics_logs(self, x, y, y_pred, sample_weight):
        if y is None:  # Label metrics are not built without labels.
            trackers = (self._loss_tracker, self.distillation_loss_tracker)
            return {tracker.name: tracker.result() for tracker in trackers}
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_metrics_result(self):
        """The metrics' results, leaving out label metrics never built
        (training on inputs without labels)."""
        results = {}
        for metric in self.metrics:
            if metric is self._compile_metrics and not metric.built:
                continue
            result = metric.result()
            results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and distribute.is_multi_worker(
            self._distribute_strategy
        ):  # Keras reduces the batch across workers, which fails there.
            data_batch = distribute.first_local_batch(self._distribute_strategy, iterator)
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _get_metrics_result_or_logs(self, logs):
        # Keras reads the epoch's metrics across replicas only when the step
        # logs hold nothing but metrics; alpha and the temperatures are more,
        # so without this the epoch logs would be the mean of each replica's
        # own results (wrong with sample weights or uneven replica batches).
        if not isinstance(logs, dict):
            return logs
        results = self.get_metrics_result()
        return {key: results.get(key, value) for key, value in logs.items()}

    def _schedulable_values(self):
        # Tensors, not variables: a run_eagerly=True step cannot return these.
        values = {"alpha": tf.identity(self._student_loss_weight.value)}
        temperatures = [
            loss for loss in self.distillation_losses
            if isinstance(getattr(loss, "temperature", None), keras.Variable)
        ]
        for loss in temperatures:
            key = "temperature" if len(temperatures) == 1 else f"{loss.name}_temperature"
            values[key] = tf.identity(loss.temperature.value)
        return values

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher": (
                    [_training.serialize_uncompiled(t) for t in self.teacher]
                    if isinstance(self.teacher, (list, tuple))
                    else _training.serialize_uncompiled(self.teacher)
                ),
                "student": _training.serialize_uncompiled(self.student),
                "distillation_losses": [
                    keras.saving.serialize_keras_object(loss)
                    for loss in self.distillation_losses
                ],
                "distillation_loss_weights": [
                    float(w.numpy()) for w in self._distillation_loss_weights
                ],
                "student_loss_weight": float(self._student_loss_weight.numpy()),
                "teacher_weights": list(self.teacher_weights),
                "teacher_combination": self.teacher_combination,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = (
                [keras.saving.deserialize_keras_object(c) for c in config[key]]
                if isinstance(config[key], list)
                else keras.saving.deserialize_keras_object(config[key])
            )
        config["distillation_losses"] = [
            keras.saving.deserialize_keras_object(loss)
            for loss in config["distillation_losses"]
        ]
        return cls(**config)


def _as_list(value, name):
    if value is None:
        raise ValueError(
            f"Expected `{name}` to be given. Received: {name}=None. Pass e.g. "
            "distillation_losses=kerasdistill.LogitsDistillation()."
        )
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _layer_names(losses, role):
    names = [getattr(loss, f"{role}_layer_name", None) for loss in losses]
    return [name for name in names if name is not None]


def _select(taps_, layer_name):
    outputs, features = taps_
    return outputs if layer_name is None else features[layer_name]


def _check_same_inputs(teacher, student):
    """Compares the symbolic inputs when both models have them."""
    try:
        teacher_inputs, student_inputs = teacher.inputs, student.inputs
    except (AttributeError, ValueError):
        return
    if not teacher_inputs or not student_inputs:
        return
    teacher_shapes = [tuple(t.shape) for t in teacher_inputs]
    student_shapes = [tuple(s.shape) for s in student_inputs]
    compatible = len(teacher_shapes) == len(student_shapes) and all(
        len(t) == len(s) and all(a is None or b is None or a == b for a, b in zip(t, s))
        for t, s in zip(teacher_shapes, student_shapes)
    )
    if not compatible:
        raise ValueError(
            "Expected the teacher to take the student's inputs. Received: "
            f"teacher input shapes {teacher_shapes}, student input shapes "
            f"{student_shapes}. Give both models the same inputs, or wrap the "
            "teacher in a model that maps the student's inputs to its own "
            "(e.g. keras.layers.Resizing)."
        )
