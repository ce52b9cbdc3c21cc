"""The `Distiller`: a `keras.Model` that trains a student from a frozen
teacher with `compile()` / `fit()`, on every Keras backend.

It overrides `call` and `compute_loss` and leaves the train and test steps
to Keras's own trainers (TensorFlow, JAX, PyTorch). `call` runs the student
once, with its tapped layers; `compute_loss` reads those features from the
same pass (`taps.PassRecord`), runs the teacher once and combines the
losses.
"""

import inspect

import keras
from keras import ops
from keras import tree

from kerasdistill import _keras_internals
from kerasdistill import _training
from kerasdistill import augmentation as augmentation_module
from kerasdistill import checks
from kerasdistill import distribute
from kerasdistill import reduction
from kerasdistill import taps
from kerasdistill import teachers as teachers_module
from kerasdistill.data import cache
from kerasdistill.losses import keras_compat


@keras.saving.register_keras_serializable(package="kerasdistill")
class Distiller(
    _keras_internals.MultiWorkerBuild, _training.CompileFromConfig, keras.Model
):
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

    `augmentation` / `mixing` make one random view per training step, fed
    to both networks (Beyer et al. 2022; docs/augmentation.md).

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
        augmentation: A Keras layer or model (e.g. `keras.layers.
            RandomTranslation(0.1, 0.1)`) applied to each training batch;
            saved with the Distiller, never part of the student. Not with
            cached teacher outputs.
        mixing: `keras.layers.MixUp()` or `CutMix()`, after `augmentation`,
            on images; the labels are mixed too, so they must be one-hot.
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
        augmentation=None,
        mixing=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        teachers, teacher_weights = teachers_module.check_teachers(
            teacher, teacher_weights, teacher_combination
        )
        checks.check_model(student, "student")
        checks.check_unit_interval(student_loss_weight, "student_loss_weight")
        distillation_losses = _as_list(distillation_losses, "distillation_losses")
        distillation_loss_weights = checks.loss_weights(
            distillation_loss_weights, len(distillation_losses)
        )
        for model in teachers:
            checks.check_not_shared(model, student)
            checks.check_teacher_takes_student_inputs(model, student)

        self.teacher = teacher if len(teachers) == 1 else teachers
        self.student = student
        self.teacher_weights = teacher_weights
        self.teacher_combination = teacher_combination
        self._view = augmentation_module.TrainingView(augmentation, mixing, student)
        self.augmentation = augmentation
        self.mixing = mixing
        for model in teachers:
            model.trainable = False
        self.distillation_losses = [
            keras_compat.as_distillation_loss(loss) for loss in distillation_losses
        ]
        for loss in self.distillation_losses:
            for model in teachers:
                loss.prepare(model, student)
        distribute.check_scope(teachers, student, self.distillation_losses)
        self._student_loss_weight = _training.non_trainable(
            "student_loss_weight", student_loss_weight
        )
        self._distillation_loss_weights = [
            _training.non_trainable(f"distillation_loss_weight_{i}", weight)
            for i, weight in enumerate(distillation_loss_weights)
        ]
        self._networks = {
            "teacher": teachers_module.teacher_network(
                teachers,
                _tapped(loss.teacher_layer_name for loss in self.distillation_losses),
                teacher_weights,
                teacher_combination,
            ),
            "student": taps.TappedNetwork(
                student,
                _tapped(loss.student_layer_name for loss in self.distillation_losses),
                "student",
            ),
        }
        self._student_pass = taps.PassRecord()
        self._mixed_labels = taps.PassRecord()
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.alpha_tracker = _training.LatestValue(name="alpha")
        tempered = _training.temperature_trackers(self.distillation_losses)
        self._tempered_losses = [loss for loss, _ in tempered]
        self.temperature_trackers = [tracker for _, tracker in tempered]
        self._labels_without_loss = False
        self._alpha_value = float(student_loss_weight)  # read while tracing
        self._evaluate_with_teacher = True
        self._teacher_in_step = True  # set by compute_loss
        if student.built:
            self.built = True

    @property
    def teachers(self):
        """The teachers, as a list (of one for a single teacher)."""
        if isinstance(self.teacher, (list, tuple)):
            return list(self.teacher)
        return [self.teacher]

    @property
    def student_loss_weight(self):
        """`alpha`, a variable; assign a number in [0, 1] to change it."""
        return self._student_loss_weight

    @student_loss_weight.setter
    def student_loss_weight(self, value):
        checks.check_unit_interval(value, "student_loss_weight")
        if self._labels_without_loss:
            self._check_student_loss(float(value))
        self._student_loss_weight.assign(float(value))
        self._alpha_value = float(value)

    @property
    def _teacher_feature_extractor(self):
        """`keras.distillation`'s name for the functional model that returns
        the teacher's outputs and tapped layers in one pass (`None` without
        taps, or with several teachers); code written for it reads it."""
        return getattr(self._networks["teacher"], "tap_model", None)

    @property
    def _student_feature_extractor(self):
        """The student's tap model, as `_teacher_feature_extractor`."""
        return self._networks["student"].tap_model

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
        strategy = distribute.strategy_of(self)
        distribute.check_compile(strategy, kwargs)
        with distribute.scope(strategy):  # as tf.keras did
            optimizer = keras.optimizers.get(optimizer)
            distribute.check_optimizer(strategy, optimizer)
            if self.student.dtype_policy.name == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; checked before training: datasets of cached
        teacher outputs (`kerasdistill.cache_teacher_outputs`), and labels
        with `student_loss_weight` > 0 but no `loss` in `compile()`."""
        arguments = inspect.signature(super().fit).bind(*args, **kwargs).arguments
        self._view.check_fit(arguments.get("x"), arguments.get("y"))
        for data in (arguments.get("x"), arguments.get("validation_data")):
            cache.check_dataset(
                data, self.teacher, self._networks["teacher"].layer_names
            )
        if _training.has_labels(arguments.get("x"), arguments.get("y")):
            self._labels_without_loss = self.loss is None
            self._alpha_value = _training.read(self._student_loss_weight)
            self._check_student_loss(self._alpha_value)
        return super().fit(*args, **kwargs)

    def call(self, inputs, training=None):
        # Before the student runs: on JAX and PyTorch a feature dict would
        # otherwise fail inside Keras with a less helpful message.
        checks.check_dict_inputs(cache.student_inputs(inputs), self.student, "student")
        view, transformation = None, None
        if training and self._view.active:  # the training step's one view
            view, transformation = self._view.make(inputs)
            inputs = view
        outputs, features = self._networks["student"](
            cache.student_inputs(inputs), training=training
        )
        if features or view is not None:
            self._student_pass.store(outputs, (features, view, transformation))
        return outputs

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """Returns the total loss of a batch and updates the loss trackers.

        `alpha * student_loss + (1 - alpha) * distillation_loss` plus the
        student's regularization losses; the distillation term alone on a
        batch without labels. The teacher runs once on `x` (or its outputs
        are read from a cached batch). The student's tapped features come
        from the forward pass that produced `y_pred` in this step; for a
        `y_pred` made elsewhere, the student runs again to tap them.

        Args:
            x: The inputs (or a cached batch).
            y: The labels, or `None` on a transfer set.
            y_pred: The student's outputs; computed from `x` when `None`.
            sample_weight: Optional per-sample weights.
            training: Whether this is a training step.

        Returns:
            A float32 scalar tensor.

        Example:

        ```python
        loss = distiller.compute_loss(x, y, distiller.student(x))
        ```
        """
        if y_pred is None:
            y_pred = self(x, training=training)
        features, view, transformation = self._student_pass_of(x, y_pred, training)
        student_taps = (y_pred, features)
        if transformation is not None and y is not None:
            mixed = self._view.mix_labels(y, transformation)
            self._mixed_labels.store(y, mixed)  # for compute_metrics
            y = mixed
        # Read (while tracing) by the compute_metrics of the same step: a
        # training step reports the teacher's terms whatever
        # evaluate_with_teacher says.
        self._teacher_in_step = training or self._evaluate_with_teacher
        if not self._teacher_in_step:
            return self._student_only_loss(x, y, y_pred, sample_weight)
        batch = reduction.batch_size(cache.student_inputs(x))
        regularization = _training.regularization(self)
        if y is not None:
            student_loss = self._student_loss(
                x, y, y_pred, sample_weight, regularization
            )
        x, teacher_taps = self._inputs_and_teacher_taps(x if view is None else view)
        distillation_loss = self._distillation_loss(
            teacher_taps,
            student_taps,
            y,
            sample_weight,
            training,
            cache.student_inputs(x),
        )
        if y is None:
            total = distillation_loss
        else:
            alpha = self._student_loss_weight
            total = alpha * student_loss + (1.0 - alpha) * distillation_loss
            _training.track(self.student_loss_tracker, student_loss, batch)
        total = total + regularization
        _training.track(self.distillation_loss_tracker, distillation_loss, batch)
        _training.track(self.total_loss_tracker, total, batch)
        self.alpha_tracker.update_state(self._student_loss_weight)
        for loss, tracker in zip(self._tempered_losses, self.temperature_trackers):
            tracker.update_state(loss.temperature)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The student's compiled metrics on the labels and the loss
        trackers; on a batch without labels, the trackers it updates."""
        if y is not None:
            mixed = self._mixed_labels.take(y)  # the labels of a mixed batch
            y = y if mixed is None else mixed
            logs = super().compute_metrics(x, y, y_pred, sample_weight)
        else:
            compiled = [  # compile(metrics=...): all but Keras's and ours
                m
                for m in self.metrics
                if m.name != "loss" and not any(m is o for o in self._own_trackers)
            ]
            logs = self._results(skip=(self.student_loss_tracker, *compiled))
        return distribute.step_logs(distribute.strategy_of(self), logs)

    def get_metrics_result(self):
        """The metrics' results, leaving out metrics not computed: label
        metrics never built (training on inputs without labels), and the
        teacher's terms when evaluating without it."""
        return self._results(skip=())

    @property
    def _own_trackers(self):
        return (
            self.student_loss_tracker,
            self.distillation_loss_tracker,
            self.total_loss_tracker,
            self.alpha_tracker,
            *self.temperature_trackers,
        )

    def _results(self, skip):
        if not self._teacher_in_step:  # the teacher's terms, and alpha
            skip = (*skip, *self._own_trackers[1:])
            if self.loss is None:
                skip = (*skip, self.student_loss_tracker)
        return _training.metric_results(self.metrics, skip)

    def _student_pass_of(self, x, y_pred, training):
        """`(features, view, transformation)` of the pass that made `y_pred`:
        its tapped features, the augmented inputs and the mixing (`None`
        without augmentation or outside training)."""
        record = self._student_pass.take(y_pred)
        if record is not None:
            return record
        features = {}  # y_pred was not made by this Distiller's call
        if self._networks["student"].layer_names:
            _, features = self._networks["student"](
                cache.student_inputs(x), training=training
            )
        return features, None, None

    def _student_only_loss(self, x, y, y_pred, sample_weight):
        """The student's own loss and regularization, without the teacher
        (`evaluate_with_teacher = False`)."""
        if y is None:
            raise ValueError(
                "evaluate_with_teacher=False reports the student's loss and "
                "metrics on labels, but the data has none. Pass labels, or "
                "set distiller.evaluate_with_teacher = True."
            )
        regularization = _training.regularization(self)
        if self.loss is None:
            return regularization
        loss = self._student_loss(x, y, y_pred, sample_weight, regularization)
        _training.track(
            self.student_loss_tracker,
            loss,
            reduction.batch_size(cache.student_inputs(x)),
        )
        return loss + regularization

    def _student_loss(self, x, y, y_pred, sample_weight, regularization):
        """The compiled loss on the labels, without the regularization
        losses (which Keras's `compute_loss` adds)."""
        if self.loss is None:
            self._labels_without_loss = True
            self._check_student_loss(self._alpha_value)
            return ops.zeros((), dtype="float32")
        total = super().compute_loss(
            cache.student_inputs(x), y, y_pred, sample_weight, training=False
        )
        return ops.cast(total, "float32") - regularization

    def _check_student_loss(self, alpha):
        if self.loss is None and alpha > 0:
            raise ValueError(
                "Received labels, but compile() was given no `loss` for "
                f"the student while student_loss_weight={alpha}. Pass a "
                "loss to compile() (e.g. loss=keras.losses."
                "SparseCategoricalCrossentropy(from_logits=True)), set "
                "student_loss_weight=0, or fit on inputs without labels."
            )

    def _inputs_and_teacher_taps(self, x):
        """`(inputs, (teacher_outputs, features))`: read from a batch of
        `kerasdistill.cache_teacher_outputs`, else by running the teacher."""
        if cache.is_cached(x):
            return cache.read(
                x, self.teacher, self._networks["teacher"].layer_names, self.student
            )
        return x, self._run_teacher(x)

    def _run_teacher(self, x):
        checks.check_dict_inputs(x, self.student, "student")
        try:
            taps_ = self._networks["teacher"](x, training=False)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "Expected the teacher to accept the student's inputs, but "
                f"calling it on them failed: {error} Give both models the "
                "same inputs, or wrap the teacher in a model that maps the "
                "student's inputs to its own (e.g. resizing)."
            ) from error
        return tree.map_structure(ops.stop_gradient, taps_)

    def _distillation_loss(
        self, teacher_taps, student_taps, y, sample_weight, training, inputs
    ):
        total = ops.zeros((), dtype="float32")
        parts = teachers_module.weighted_parts(self._networks["teacher"], teacher_taps)
        for loss, weight in zip(
            self.distillation_losses, self._distillation_loss_weights
        ):
            student = _select(student_taps, loss.student_layer_name)
            for teacher_weight, taps_ in parts:
                teacher = _select(taps_, loss.teacher_layer_name)
                total = total + weight * teacher_weight * _training.distillation_value(
                    loss, teacher, student, y, sample_weight, training, inputs
                )
        return total

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
                    _training.read(w) for w in self._distillation_loss_weights
                ],
                "student_loss_weight": _training.read(self._student_loss_weight),
                "teacher_weights": list(self.teacher_weights),
                "teacher_combination": self.teacher_combination,
                "augmentation": _serialize_optional(self.augmentation),
                "mixing": _serialize_optional(self.mixing),
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
        for key in ("augmentation", "mixing"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _as_list(value, name):
    if value is None:
        raise ValueError(
            f"Expected `{name}` to be given. Received: {name}=None. Pass e.g. "
            "distillation_losses=kerasdistill.LogitsDistillation()."
        )
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _serialize_optional(layer):
    return None if layer is None else keras.saving.serialize_keras_object(layer)


def _tapped(layer_names):
    """The layers the losses tap (those that are not `None`)."""
    return [name for name in layer_names if name is not None]


def _select(taps_, layer_name):
    outputs, features = taps_
    return outputs if layer_name is None else features[layer_name]
