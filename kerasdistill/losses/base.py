"""The protocol every distillation loss follows, and its base classes.

A distillation loss compares the teacher's outputs with the student's and
returns one value per sample. The `Distiller` weights those values by
`sample_weight` (and `class_weight`) and reduces them the way a Keras loss
does (`"sum_over_batch_size"`, scaled for the replicas of a distribution
strategy), so the distillation term and the student's own loss are on the
same footing.

The protocol (the names are `keras.distillation`'s where it has one); every
model that trains with a loss (`Distiller`, `SelfDistiller`,
`DeepSupervision`, `MutualLearning`), the teacher-output cache and the
schedule callbacks read a loss through it alone:

- `teacher_layer_name` / `student_layer_name`: the layer each network taps
  for this loss, or `None` for its final outputs;
- `temperature`: the temperature variable a `TemperatureScheduler` drives,
  or `None`; `learns_temperature`: `True` for a loss whose temperature is
  trained (`CTKD`), which no schedule may set;
- `validate_model_compatibility(teacher, student)`: checks only, before
  training; raises a `ValueError` and changes nothing;
- `build_for(teacher, student)`: creates the state that depends on the
  models (`FeatureDistillation`'s adapter), after the checks;
- `prepare(teacher, student)`: the two above, in order; what a model calls
  once per teacher when it is created;
- `validate_outputs(teacher_outputs, student_outputs)`: checks at each step;
- `compute_loss(teacher_outputs, student_outputs, sample_weight, y_true,
  training)`: the scalar loss.

A loss of another kind (a `keras.distillation` loss) is translated into one
that follows it by `kerasdistill.losses.keras_compat.as_distillation_loss`.
"""

import inspect
import re

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
    one that takes `training` receives whether the step trains (to
    update running statistics only then, as `DifficultyWeighted` does),
    and one that takes `inputs` receives the batch's inputs (to read a
    padding mask, as `FeatureDistillation(mask=...)` does).
    A `call` that returns one value for the whole batch (a plain mean) is
    accepted without sample weights, and counted once under a distribution
    strategy, not once per replica.
    A loss is a Keras `Layer` so that its state (a temperature variable, a
    learned adapter) is tracked, trained and saved with the `Distiller`. It is
    never called as a layer: the `Distiller` calls `compute_loss`, which
    casts the inputs to float32 (so the math stays in float32 under
    `mixed_float16`), applies the sample weights and reduces.

    Set `teacher_layer_name` / `student_layer_name` to compare intermediate
    layer outputs instead of the final outputs. The other methods of the
    protocol (see `kerasdistill.losses.base`) check and build the loss for
    the models it compares; their defaults accept any models and build
    nothing.

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
    temperature = None
    learns_temperature = False
    _call_arguments = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # The optional arguments `call` takes, read once per class.
        cls._call_arguments = frozenset(inspect.signature(cls.call).parameters) & {
            "y_true",
            "training",
            "inputs",
        }

    def __init__(self, name=None, **kwargs):
        # Named after the class, as Keras's losses are (not numbered per
        # process, as layers are): the History keys made from the name stay
        # the same from one run to the next.
        super().__init__(name=name or _snake_case(type(self).__name__), **kwargs)
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
        inputs=None,
    ):
        """Returns the scalar loss, weighted by `sample_weight` and reduced.

        Args:
            teacher_outputs: The teacher's outputs (or tapped features).
            student_outputs: The student's outputs (or tapped features).
            sample_weight: Optional per-sample weights, shape `(batch,)`.
            y_true: The labels, passed to a `call` that accepts `y_true`.
            training: Whether this is a training step, passed to a `call`
                that accepts `training` (e.g. to update running statistics).
            inputs: The batch's inputs, passed to a `call` that accepts
                `inputs` (e.g. to read a padding mask).

        Returns:
            A float32 scalar tensor.
        """
        values = self.per_sample_loss(
            teacher_outputs,
            student_outputs,
            y_true=y_true,
            training=training,
            inputs=inputs,
        )
        values = ops.convert_to_tensor(values, dtype="float32")
        if len(values.shape) == 0:
            return self._batch_value(values, sample_weight)
        return reduction.weighted_mean(values, sample_weight)

    def per_sample_loss(
        self,
        teacher_outputs,
        student_outputs,
        y_true=None,
        training=None,
        inputs=None,
    ):
        """Returns the loss of each sample, shape `(batch,)`, in float32.

        Casts the outputs to float32 and calls `call` with the `y_true`,
        `training` and `inputs` arguments it accepts.
        """
        given = {"y_true": y_true, "training": training, "inputs": inputs}
        kwargs = {name: given[name] for name in self._call_arguments}
        return self.call(
            to_float32(teacher_outputs), to_float32(student_outputs), **kwargs
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
        compare `teacher` with `student`; checks only, changes nothing."""

    def build_for(self, teacher, student):
        """Creates the state this loss needs for `teacher` and `student`
        (e.g. a learned adapter), once their compatibility is checked.

        Called once per teacher; a later call for models whose tapped
        shapes differ from the first raises a `ValueError`. Builds nothing
        by default."""

    def prepare(self, teacher, student):
        """Checks this loss against `teacher` and `student`, then builds it
        for them: what each model that trains with it does when created.

        Example:

        ```python
        loss = kerasdistill.FeatureDistillation("mse", "t_hidden", "s_hidden")
        loss.prepare(teacher, student)  # checks the layers, builds the adapter
        ```
        """
        self.validate_model_compatibility(teacher, student)
        self.build_for(teacher, student)


def copy_loss(loss, fix):
    """A new loss with `loss`'s configuration and fresh state (no adapter
    built, no running statistics), through its config; `fix` says how to do
    without a copy when it cannot be made.

    Example:

    ```python
    fresh = kerasdistill.losses.base.copy_loss(
        kerasdistill.LogitsDistillation(4.0), fix="Build the loss anew."
    )
    ```
    """
    try:
        return keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(loss)
        )
    except (AttributeError, NotImplementedError, TypeError, ValueError) as error:
        raise TypeError(
            "Expected a distillation loss that can be copied from its config "
            "(registered with keras.saving.register_keras_serializable, with "
            f"a get_config). Received: {loss!r} of type {type(loss).__name__}, "
            f"which cannot ({error}). {fix}"
        ) from error


def loss_value(loss, teacher, student, y, sample_weight, training=None, inputs=None):
    """`loss` (a `kerasdistill.DistillationLoss`) on (stop-gradient
    `teacher`, `student`), checked, weighted per sample and reduced: a
    float32 scalar. A loss may read the batch's `inputs` (e.g. a padding
    mask).

    Example:

    ```python
    kerasdistill.losses.base.loss_value(
        kerasdistill.LogitsDistillation(2.0), teacher(x), student(x), y, None
    )
    ```
    """
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


def to_float32(structure):
    """Casts the float (and bool) tensors; integer ones (the vocabulary
    indices of top-k teacher targets) stay integers."""
    return tree.map_structure(
        lambda x: x if _is_integer(x) else ops.cast(x, "float32"), structure
    )


def _is_integer(x):
    dtype = getattr(x, "dtype", None)
    return dtype is not None and "int" in keras.backend.standardize_dtype(dtype)


def sum_over_outputs(per_output_fn, spec, teacher, student, y_true=None):
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


def flat_specs(spec):
    return [s for s in tree.flatten(spec) if s is not None]


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


def _snake_case(class_name):
    """`"FeatureDistillation"` -> `"feature_distillation"`, `"DKD"` -> `"dkd"`."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", class_name)
    return re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", words).lower()
