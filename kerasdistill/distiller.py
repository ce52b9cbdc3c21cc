"""The `Distiller`: a `keras.Model` that trains a student from a frozen
teacher with `compile()` / `fit()`, on every Keras backend.

It overrides `call`, `compute_loss` and `compute_metrics` and leaves the
train and test steps to Keras's own trainers (TensorFlow, JAX, PyTorch),
which call `y_pred = model(x, training=True)`, then `compute_loss(x, y,
y_pred, ...)` and `compute_metrics(x, y, y_pred, ...)`. One training step,
in order:

1. inputs: `x`, or the inputs of a batch of cached teacher outputs;
2. view: the `augmentation` / `mixing` layers make the inputs both
   networks see (the inputs themselves without them);
3. taps: `call` runs the student once on the view, with its tapped layers,
   and returns it all as a `StudentPass`, which Keras passes on as
   `y_pred`; `compute_loss` runs the teacher once on the same view (or
   reads its cached outputs);
4. losses: each distillation loss on the teacher's and the student's
   outputs or tapped features, and the compiled loss on the labels (mixed
   as the inputs were);
5. weighted sum: `alpha * student_loss + (1 - alpha) * sum_i w_i *
   distillation_loss_i`, plus the student's regularization losses; Keras
   takes the gradients with respect to the trainable weights (the
   student's and its adapters').

Everything a step uses travels in Keras's arguments or in variables
(alpha, the loss weights, the temperatures) read inside the compiled step.
Outside training, `call` returns the student's plain outputs, and
`compute_loss` runs the tapped student again when a loss needs its
features.
"""

import inspect

import keras
from keras import ops
from keras import tree

from kerasdistill import _keras_internals
from kerasdistill import augmentation as augmentation_module
from kerasdistill import checks
from kerasdistill import distribute
from kerasdistill import labels as labels_module
from kerasdistill import logs as logs_module
from kerasdistill import model_configs
from kerasdistill import reduction
from kerasdistill import taps
from kerasdistill import teachers as teachers_module
from kerasdistill import variables
from kerasdistill.data import cache
from kerasdistill.data import semi_supervised
from kerasdistill.losses import base
from kerasdistill.losses import keras_compat
from kerasdistill.student_pass import StudentPass


@keras.saving.register_keras_serializable(package="kerasdistill")
class Distiller(
    _keras_internals.MultiWorkerBuild,
    _keras_internals.CompileFromConfig,
    _keras_internals.EpochLogs,
    keras.Model,
):
    """Trains `student` to imitate a frozen `teacher` and fit the labels.

    The loss of a batch is

        alpha * student_loss + (1 - alpha) * sum_i(w_i * distillation_loss_i)

    plus the student's regularization losses (`alpha`: `student_loss_weight`;
    `student_loss`: the `loss` given to `compile()`; `w_i`:
    `distillation_loss_weights`). A `fit()` on inputs without labels (a
    transfer set) trains on the distillation term alone, and so does its
    validation `loss` (`val_student_loss` still reports the labels' loss).
    With partial labels (`kerasdistill.partial_labels`,
    `kerasdistill.data.labeled_and_unlabeled`) the student loss is the mean
    over the labeled samples, the distillation loss the mean over all. Each
    training step runs the teacher (`training=False`) and the student once,
    whatever layers the losses tap. `alpha`, the loss weights and every
    temperature are non-trainable variables: assigning them (or a callback)
    takes effect without tracing the train function again. The module
    docstring gives the step's order, `kerasdistill.logs` what History logs.

    The constructor is that of `keras.distillation.Distiller`, whose loss
    objects are accepted. `predict()` and `evaluate()` use the student; the
    teacher is frozen. `fit()` and `evaluate()` also take the cache of
    `kerasdistill.cache_teacher_outputs` (the teacher does not run), and
    `evaluate_with_teacher = False` leaves the teacher out of evaluation.
    Several teachers may be given as a list: with
    `teacher_combination="average"` their outputs and features are averaged
    (by `teacher_weights`) before the losses; with `"per_teacher"` each loss
    is computed against every teacher and the results averaged.

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
        mixing: `keras.layers.MixUp()` (inputs of any rank) or `CutMix()`
            (images), after `augmentation`; the labels are mixed too, so
            they must be one-hot.
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
        distillation_losses = checks.as_list(distillation_losses, "distillation_losses")
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
        self._student_loss_weight = variables.non_trainable(
            "student_loss_weight", student_loss_weight
        )
        self._distillation_loss_weights = [
            variables.non_trainable(f"distillation_loss_weight_{i}", weight)
            for i, weight in enumerate(distillation_loss_weights)
        ]
        self._networks = {
            "teacher": teachers_module.teacher_network(
                teachers,
                taps.tapped(
                    loss.teacher_layer_name for loss in self.distillation_losses
                ),
                teacher_weights,
                teacher_combination,
            ),
            "student": taps.TappedNetwork(
                student,
                taps.tapped(
                    loss.student_layer_name for loss in self.distillation_losses
                ),
                "student",
            ),
        }
        self.loss_means = logs_module.loss_means(self.distillation_losses)
        self.alpha_tracker = logs_module.LastValue(name="alpha")
        self._set_temperature_trackers()
        self._evaluate_with_teacher = True
        self._uses_labels = None  # set by fit() from its data
        if student.built:
            self.built = True

    def _set_temperature_trackers(self):
        """The metrics that log the losses' temperatures."""
        tempered = logs_module.temperature_trackers(self.distillation_losses)
        self._tempered_losses = [loss for loss, _ in tempered]
        self.temperature_trackers = [tracker for _, tracker in tempered]

    @property
    def teachers(self):
        """The teachers, as a list (of one for a single teacher)."""
        if isinstance(self.teacher, (list, tuple)):
            return list(self.teacher)
        return [self.teacher]

    @variables.StudentLossWeight.student_loss_weight.setter
    def student_loss_weight(self, value):
        # Refused once compiled where the labels have no loss.
        checks.check_unit_interval(value, "student_loss_weight")
        if self.compiled and self._uses_labels is True:
            labels_module.check_student_loss(self.loss, float(value))
        self._student_loss_weight.assign(float(value))

    @property
    def uses_labels(self):
        """Whether the objective includes the student's loss on the labels:
        `False` after `fit()` on inputs without labels (a transfer set),
        where `alpha` is not applied and `loss` is the distillation term
        alone, in training and in validation alike."""
        return self._uses_labels is not False

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
        values = checks.as_list(values, "distillation_loss_weights")
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
        """Whether `evaluate()` (and validation in `fit()`) runs the teacher:
        `True` (default) reports the training objective as `loss`, with
        `student_loss` and `distillation_loss`; `False` skips the teacher,
        and `loss` is the student's own loss on the labels plus its
        regularization (what `student.evaluate()` reports). Not saved."""
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
        """`keras.Model.fit`, checked before training: caches of teacher
        outputs (read without Python per batch), the labels (class indices
        >= 0, or partial labels), and labels with `student_loss_weight` > 0
        but no compiled `loss`. Data without labels makes the objective the
        distillation term alone (see `uses_labels`)."""
        bound = inspect.signature(super().fit).bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = cache.fit_arguments(bound.arguments)
        arguments["x"] = semi_supervised.check_batches(arguments.get("x"))
        x, y = arguments["x"], arguments.get("y")
        self._view.check_fit(x, y)
        layer_names = self._networks["teacher"].layer_names
        for data in (x, arguments.get("validation_data")):
            cache.check_dataset(data, self.teacher, layer_names, self.student)
        labels_module.check_label_values(y, self.loss)
        uses_labels = labels_module.data_has_labels(x, y) is not False
        if uses_labels:
            labels_module.check_student_loss(
                self.loss, variables.read(self._student_loss_weight)
            )
        if uses_labels != self.uses_labels:
            self.test_function = None  # validation's objective follows
        self._uses_labels = uses_labels
        return super().fit(**arguments)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`; a cache is checked and read as in `fit()`."""
        arguments = inspect.signature(super().evaluate).bind(*args, **kwargs).arguments
        arguments = cache.fit_arguments(arguments)
        extra = arguments.pop("kwargs", {})
        layer_names = self._networks["teacher"].layer_names
        cache.check_dataset(arguments.get("x"), self.teacher, layer_names, self.student)
        return super().evaluate(**arguments, **extra)

    def call(self, inputs, training=None):
        """The student's outputs; in a training step, its `StudentPass`:
        the outputs, its tapped features and the view it saw."""
        inputs, cached = cache.split(inputs)
        # Before the student runs: on JAX and PyTorch a feature dict would
        # otherwise fail inside Keras with a less helpful message.
        checks.check_dict_inputs(inputs, self.student, "student")
        if not training:
            return self.student(inputs, training=training)
        view, mixing = inputs, None
        if self._view.active:
            if cached is not None:
                raise ValueError(augmentation_module.CACHED_MESSAGE)
            view, mixing = self._view.make(inputs)
        outputs, features = self._networks["student"](view, training=True)
        return StudentPass(outputs, features, view, mixing)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """Returns the total loss of a batch and updates the loss trackers.

        `alpha * student_loss + (1 - alpha) * distillation_loss` plus the
        student's regularization losses; the distillation term alone on
        data without labels. `y_pred` is the `StudentPass` that
        `call(x, training=True)` returned, or the student's plain outputs
        (then the student runs again only if a loss taps its layers). The
        teacher runs once on the view the student saw, or its outputs are
        read from a cached batch.

        Args:
            x: The inputs (or a cached batch).
            y: The labels, partial labels, or `None` on a transfer set.
            y_pred: What `call` returned; computed from `x` when `None`.
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
        inputs, cached = cache.split(x)
        if not (training or self._evaluate_with_teacher):
            y, _, sample_weight = labels_module.split(y, sample_weight)
            return self._student_only_loss(
                y, y_pred, sample_weight, reduction.regularization(self)
            )
        step = self._student_pass(inputs, y_pred, training)
        y, has_label, sample_weight = self._labels(y, sample_weight, step)
        regularization = reduction.regularization(self)  # before the teacher
        batch = reduction.batch_size(inputs)
        student_loss, labeled, terms = self._step_losses(
            step, y, has_label, sample_weight, cached, training
        )
        distillation_loss = (
            sum(terms[1:], terms[0]) if terms else ops.zeros((), dtype="float32")
        )
        total = distillation_loss
        if y is not None and self.uses_labels:
            alpha = self._student_loss_weight
            total = alpha * student_loss + (1.0 - alpha) * distillation_loss
        total = total + regularization
        values = {logs_module.DISTILLATION_LOSS: distillation_loss}
        values.update(zip(self.loss_means.names[2:], terms))  # after the two
        weights = dict.fromkeys(values, batch)
        if y is not None:
            values[logs_module.STUDENT_LOSS] = student_loss
            weights[logs_module.STUDENT_LOSS] = labeled
        self.loss_means.update_state(values, weights)
        if training:  # the values this step used, logged for training only
            self.alpha_tracker.update_state(self._student_loss_weight)
            for loss, tracker in zip(self._tempered_losses, self.temperature_trackers):
                tracker.update_state(loss.temperature)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The student's compiled metrics on the labeled samples, and the
        logs of the step (see `kerasdistill.logs`)."""
        training = isinstance(y_pred, StudentPass)
        outputs = y_pred.outputs if training else y_pred
        y, has_label, sample_weight = self._labels(
            y, sample_weight, y_pred if training else None
        )
        if y is not None:  # updates the compiled metrics, returns all results
            results = super().compute_metrics(
                x, y, labels_module.for_metrics(outputs, has_label), sample_weight
            )
        else:
            results = self.get_metrics_result()
        logs = logs_module.select(
            results, self._step_logs(training, y is not None), y is not None
        )
        return distribute.step_logs(distribute.strategy_of(self), logs)

    def get_metrics_result(self):
        """Every built metric's result (`total_loss` repeating `loss`).
        At the end of an epoch and of `evaluate()`, History gets those of
        the keys the last step logged (`_keras_internals.EpochLogs`)."""
        logs = logs_module.results(self.metrics)
        logs[logs_module.TOTAL_LOSS] = logs["loss"]
        return logs

    def _step_logs(self, training, labeled):
        """`{key: bool}`: which of the model's own keys a step logs (see
        `kerasdistill.logs`)."""
        with_teacher = training or self._evaluate_with_teacher
        return {
            logs_module.TOTAL_LOSS: with_teacher,
            logs_module.STUDENT_LOSS: labeled and self.loss is not None,
            **dict.fromkeys(self.loss_means.names[1:], with_teacher),
            self.alpha_tracker.name: training and labeled and self.uses_labels,
            **{tracker.name: training for tracker in self.temperature_trackers},
        }

    def _student_pass(self, inputs, y_pred, training):
        """The `StudentPass` that made `y_pred`, or, for the student's plain
        outputs, one made of them (the student runs again, untouched by
        augmentation, only to tap the layers the losses read)."""
        if isinstance(y_pred, StudentPass):
            return y_pred
        features = {}
        if self._networks["student"].layer_names:
            _, features = self._networks["student"](inputs, training=training)
        return StudentPass(y_pred, features, inputs, None)

    def _labels(self, y, sample_weight, step):
        """`(labels, has_label, sample_weight)` of the batch as the step saw
        it: partial labels split, and mixed as the inputs were."""
        y, has_label, sample_weight = labels_module.split(y, sample_weight)
        if y is not None and step is not None and step.mixing is not None:
            y, has_label = self._view.mix_labels(y, has_label, step.mixing)
        return y, has_label, sample_weight

    def _step_losses(self, step, y, has_label, sample_weight, cached, training):
        """The losses stage of a step: `(student_loss, labeled, terms)`, the
        student's loss on the labels over `labeled` samples (`None, None`
        without labels) and each distillation loss's weighted term."""
        student_loss = labeled = None
        if y is not None:
            student_loss, labeled = labels_module.student_loss(
                self, y, step.outputs, sample_weight, has_label
            )
        teacher_taps = self._teacher_taps(step.view, cached)
        terms = self._distillation_terms(
            teacher_taps, step, y, has_label, sample_weight, training
        )
        return student_loss, labeled, terms

    def _student_only_loss(self, y, outputs, sample_weight, regularization):
        """The student's own loss and regularization, without the teacher
        (`evaluate_with_teacher = False`)."""
        if y is None:
            raise ValueError(
                "evaluate_with_teacher=False reports the student's loss and "
                "metrics on labels, but the data has none. Pass labels, or "
                "set distiller.evaluate_with_teacher = True."
            )
        if self.loss is None:
            return regularization
        loss, labeled = labels_module.student_loss(self, y, outputs, sample_weight)
        self.loss_means.update_state({logs_module.STUDENT_LOSS: loss}, labeled)
        return loss + regularization

    def _teacher_taps(self, view, cached):
        """`(teacher_outputs, features)` on the view: read from a cached
        batch, else by running the teacher once."""
        if cached is not None:
            return cached
        checks.check_dict_inputs(view, self.student, "student")
        try:
            taps_ = self._networks["teacher"](view, training=False)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "Expected the teacher to accept the student's inputs, but "
                f"calling it on them failed: {error} Give both models the "
                "same inputs, or wrap the teacher in a model that maps the "
                "student's inputs to its own (e.g. resizing)."
            ) from error
        return tree.map_structure(ops.stop_gradient, taps_)

    def _distillation_terms(
        self, teacher_taps, step, y, has_label, sample_weight, training
    ):
        """Each loss's weighted term `w_i * distillation_loss_i` (averaged
        over the teachers of a per-teacher ensemble)."""
        student_taps = (step.outputs, step.features)
        parts = teachers_module.weighted_parts(self._networks["teacher"], teacher_taps)
        terms = []
        for loss, weight in zip(
            self.distillation_losses, self._distillation_loss_weights
        ):
            labels_module.check_reads_labels(loss, has_label)
            student = taps.select(student_taps, loss.student_layer_name)
            values = [
                teacher_weight
                * base.loss_value(
                    loss,
                    taps.select(taps_, loss.teacher_layer_name),
                    student,
                    y,
                    sample_weight,
                    training,
                    step.view,
                )
                for teacher_weight, taps_ in parts
            ]
            terms.append(weight * sum(values[1:], values[0]))
        return terms

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher": model_configs.serialized(self.teacher),
                "student": model_configs.serialized(self.student),
                "distillation_losses": model_configs.serialized(
                    self.distillation_losses
                ),
                "distillation_loss_weights": [
                    variables.read(w) for w in self._distillation_loss_weights
                ],
                "student_loss_weight": variables.read(self._student_loss_weight),
                "teacher_weights": list(self.teacher_weights),
                "teacher_combination": self.teacher_combination,
                "augmentation": model_configs.serialized(self.augmentation),
                "mixing": model_configs.serialized(self.mixing),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**model_configs.deserialized(config, _OBJECTS))


_OBJECTS = ("teacher", "student", "distillation_losses", "augmentation", "mixing")
