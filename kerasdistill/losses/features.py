"""Intermediate-feature distillation: a student layer's output is pulled
toward a teacher layer's output, both tapped in the networks' single
forward pass, through a learned adapter when their shapes differ."""

import keras
from keras import ops
from keras import tree

from kerasdistill import taps
from kerasdistill.losses import adapters
from kerasdistill.losses import feature_functions
from kerasdistill.losses import masking


@keras.saving.register_keras_serializable(package="kerasdistill")
class FeatureDistillation(masking.PositionWeightedLoss):
    """Distills a teacher layer's output into a student layer's output.

    `loss` is one of the classic feature losses, by name:

    | name | what | reference | shapes must share |
    | --- | --- | --- | --- |
    | `"mse"` | hint: mean squared difference | Romero et al. 2015 | all |
    | `"cosine"` | `1 - cos` of the flattened features | Romero et al. 2015 | all |
    | `"attention_transfer"` | normalized spatial attention maps | Zagoruyko & Komodakis 2017 | positions |
    | `"similarity_preserving"` | batch similarity matrices | Tung & Mori 2019 | nothing |
    | `"rkd_distance"`, `"rkd_angle"` | distances / angles between samples | Park et al. 2019 | nothing |
    | `"pkt"` | conditional probability of neighbours | Passalis & Tefas 2018 | nothing |
    | `"gram"` | channel Gram matrices | Gatys et al. 2016 | channels |

    or any Keras loss (name, `keras.losses.Loss`, function `(y_true,
    y_pred)`), averaged over the non-batch axes (shapes must be equal). See
    `kerasdistill.losses` for each formula.

    Layers are named by their Keras name, or by a path
    `"backbone/block2_out"` inside a nested model (a plain name is also
    searched inside nested models). With both names `None`, the final
    outputs are compared.

    When the tapped shapes differ where the loss needs them equal,
    `adapter="auto"` learns a projection of the student's feature into the
    teacher's space: `Dense` for vectors, a 1x1 convolution (with
    `BatchNormalization` if `adapter_batchnorm`) for sequences and feature
    maps, after average pooling or bilinear resizing when heights and
    widths differ. The adapter belongs to this loss: it trains with the
    student (the `Distiller`'s trainable variables include it), is saved
    with the `Distiller`, and is never part of `distiller.student`. It is
    built from the symbolic shapes when the `Distiller` is created
    (`build_for`); `validate_model_compatibility` only checks them.

    The relational losses (`similarity_preserving`, `rkd_*`, `pkt`) are not
    per-sample: each sample gets its share of the batch's terms (its row,
    its pairs, the angles at its vertex), `sample_weight` weights those
    shares, and they need a batch of at least 2 (3 for `rkd_angle`).

    Args:
        loss: A feature-loss name above or a Keras loss. Defaults to `"mse"`.
        teacher_layer_name: The teacher layer (name or path) to tap, or
            `None` for the final output.
        student_layer_name: The student layer to tap, or `None`.
        adapter: `"auto"` (default), `None` (shapes must already match) or
            a `keras.layers.Layer` applied to the student's feature.
        adapter_batchnorm: Whether the automatic adapter's 1x1 convolution
            (sequences and feature maps whose channels differ) is followed
            by `BatchNormalization`. `True` with another adapter, or where
            the adapter has no convolution, raises a `ValueError`. Defaults
            to False.
        mask: `None` (default), or where the batch's inputs hold the
            padding mask of the tapped sequences `(batch, positions,
            channels)`: the name of a dict input (`"padding_mask"` for
            keras-hub models) or the index of a list input. Padded
            positions (mask 0) do not count: a loss that splits over
            positions (`"mse"`, a Keras loss, ...) is the mean over the
            batch's unpadded positions, as Keras reduces a masked sequence
            (see `kerasdistill.losses.masking`); one that does not
            (`"cosine"`, the relational losses) compares the features with
            the padded positions set to 0. A `(batch, positions)`
            `sample_weight` weights the positions, and its zeros are
            padding too, with or without `mask`.
        name: Optional name.

    Example:

    ```python
    hint = kerasdistill.FeatureDistillation(
        loss="similarity_preserving",
        teacher_layer_name="block2_out", student_layer_name="block1_out",
    )
    distiller = kerasdistill.Distiller(
        teacher, student, [kerasdistill.LogitsDistillation(), hint],
        distillation_loss_weights=[1.0, 0.5],
    )
    ```

    Reference:
        Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.
        https://arxiv.org/abs/1412.6550 (and the papers of the losses above)
    """

    def __init__(
        self,
        loss="mse",
        teacher_layer_name=None,
        student_layer_name=None,
        adapter="auto",
        adapter_batchnorm=False,
        mask=None,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        masking.check_mask_key(mask, type(self).__name__)
        if isinstance(loss, dict) and "class_name" in loss:
            loss = keras.losses.deserialize(loss)
        self._loss_fn, self._match = _resolve_loss(loss)
        if isinstance(adapter, dict) and "class_name" in adapter:
            adapter = keras.saving.deserialize_keras_object(adapter)
        if not (
            adapter is None
            or adapter == "auto"
            or isinstance(adapter, keras.layers.Layer)
        ):
            raise TypeError(
                "Expected `adapter` to be 'auto', None or a keras Layer. "
                f"Received: adapter={adapter!r} of type {type(adapter).__name__}"
            )
        if not isinstance(adapter_batchnorm, bool):
            raise TypeError(
                "Expected `adapter_batchnorm` to be True or False. Received: "
                f"adapter_batchnorm={adapter_batchnorm!r}"
            )
        if adapter_batchnorm and adapter != "auto":
            raise ValueError(
                "Expected adapter_batchnorm=True only with adapter='auto' (it "
                "ends the automatic adapter with BatchNormalization). "
                f"Received: adapter={adapter!r}. Put the BatchNormalization "
                "in your own adapter, or pass adapter='auto'."
            )
        self.loss = loss
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self._adapter_mode = (
            "layer" if isinstance(adapter, keras.layers.Layer) else adapter
        )
        self.adapter_batchnorm = adapter_batchnorm
        self.mask = mask
        self.adapter = adapter if self._adapter_mode == "layer" else None
        self._adapted_shapes = None  # (teacher, student) shapes, once resolved

    def call(self, teacher_outputs, student_outputs, training=None, inputs=None):
        return self._values(teacher_outputs, student_outputs, training, inputs)

    def _values(self, teacher, student, training, inputs, position_weight=None):
        """Per-sample values; padded positions (and per-position weights)
        are applied when `mask` is set or `position_weight` is given."""
        if self._adapted_shapes is None:
            self._resolve(
                tuple(teacher.shape[1:]), tuple(student.shape[1:]), called_on=student
            )
        if self.adapter is not None:
            student = ops.cast(self.adapter(student, training=training), "float32")
        if self.mask is None and position_weight is None:
            return _mean_per_sample(self._loss_fn(teacher, student))
        name = type(self).__name__
        if self.mask is None:
            valid = ops.ones_like(position_weight)
        else:
            valid = masking.padding_mask(inputs, self.mask, name)
        for feature in (teacher, student):
            masking.check_positions(feature, valid, name)
        per_position = _per_position_function(self.loss, self._loss_fn)
        if per_position is not None:
            values = per_position(teacher, student)
            if len(values.shape) > 2:
                values = ops.mean(values, axis=tuple(range(2, len(values.shape))))
            if len(values.shape) == 2:
                return masking.position_mean(values, valid, position_weight)
        factor = 1.0
        if position_weight is not None:
            factor = masking.mean_position_weight(valid, position_weight)
            valid = valid * ops.cast(ops.not_equal(position_weight, 0.0), "float32")
        teacher, student = masking.zero_padded((teacher, student), valid)
        return _mean_per_sample(self._loss_fn(teacher, student)) * factor

    def validate_outputs(self, teacher_outputs, student_outputs):
        for outputs, role in (
            (teacher_outputs, "teacher"),
            (student_outputs, "student"),
        ):
            if not hasattr(outputs, "shape"):
                raise ValueError(self._not_one_tensor(role, outputs))

    def validate_model_compatibility(self, teacher, student):
        for model, role in ((teacher, "teacher"), (student, "student")):
            masking.check_model_has_mask(model, self.mask, role, type(self).__name__)
        teacher_spec, student_spec = self._tapped_specs(teacher, student)
        for spec, role in ((teacher_spec, "teacher"), (student_spec, "student")):
            if spec is not None and self.mask is not None and len(spec.shape) < 3:
                raise ValueError(
                    f"{type(self).__name__}: mask={self.mask!r} needs a "
                    "sequence (batch, positions, channels) to mask. Received "
                    f"the {role}'s feature "
                    f"'{getattr(self, f'{role}_layer_name') or 'output'}' of "
                    f"shape {tuple(spec.shape)}. Tap a sequence, or pass "
                    "mask=None."
                )
        if teacher_spec is None or student_spec is None:
            if self._adapter_mode == "layer":
                raise ValueError(
                    f"{type(self).__name__}: expected the tapped shapes to "
                    "build the adapter before training. Received a subclassed "
                    "model that was never called. Call the teacher and the "
                    "student on a batch before creating the Distiller."
                )
            return  # shapes are checked at the first step
        self._check_shapes(tuple(teacher_spec.shape[1:]), tuple(student_spec.shape[1:]))

    def build_for(self, teacher, student):
        """Builds the adapter for the tapped shapes (known from the symbolic
        outputs; for a subclassed model never called, at the first step)."""
        teacher_spec, student_spec = self._tapped_specs(teacher, student)
        if teacher_spec is not None and student_spec is not None:
            self._resolve(tuple(teacher_spec.shape[1:]), tuple(student_spec.shape[1:]))

    def _tapped_specs(self, teacher, student):
        teacher_spec = taps.feature_spec(teacher, self.teacher_layer_name, "teacher")
        student_spec = taps.feature_spec(student, self.student_layer_name, "student")
        for spec, role in ((teacher_spec, "teacher"), (student_spec, "student")):
            if spec is not None and not hasattr(spec, "shape"):
                raise ValueError(self._not_one_tensor(role, spec))
        return teacher_spec, student_spec

    def _check_shapes(self, teacher_shape, student_shape):
        """Raises a `ValueError` when these tapped shapes cannot be compared
        (or differ from those the loss was built for); builds nothing."""
        if (teacher_shape, student_shape) == self._adapted_shapes:
            return
        if self._adapted_shapes is not None and (
            self.adapter is not None
            or adapters.mismatch(student_shape, teacher_shape, self._match)
        ):
            raise ValueError(
                f"{type(self).__name__}: it was set up (with its adapter, if "
                f"any) for a teacher feature of shape {self._adapted_shapes[0]} "
                f"and a student feature of shape {self._adapted_shapes[1]}. "
                f"Received {teacher_shape} and {student_shape}. Tap layers of "
                "the same shape in every teacher, or use a new loss object."
            )
        if self._adapter_mode == "auto":
            adapters.check_adapter(
                student_shape, teacher_shape, self._match, self.adapter_batchnorm
            )
        elif self._adapter_mode is None and adapters.mismatch(
            student_shape, teacher_shape, self._match
        ):
            raise ValueError(
                f"{type(self).__name__}: expected the tapped teacher and "
                f"student features to have {self._what()} with "
                f"adapter=None. Received: teacher "
                f"'{self.teacher_layer_name or 'output'}' {teacher_shape}, "
                f"student '{self.student_layer_name or 'output'}' "
                f"{student_shape}. Pass adapter='auto' to learn a "
                "projection, or tap layers of matching shapes."
            )

    def _resolve(self, teacher_shape, student_shape, called_on=None):
        """Checks these tapped shapes and builds the adapter for them;
        `called_on` is the student feature when resolved at a call, where
        an adapter can be built eagerly but not inside a traced step."""
        if (teacher_shape, student_shape) == self._adapted_shapes:
            return
        self._check_shapes(teacher_shape, student_shape)
        if self._adapted_shapes is not None:
            return  # another teacher's feature of a compatible shape
        if self._adapter_mode == "layer":
            adapted = tuple(
                self.adapter(keras.KerasTensor((None, *student_shape))).shape[1:]
            )
            if adapters.mismatch(adapted, teacher_shape, self._match):
                raise ValueError(
                    f"{type(self).__name__}: expected the adapter to map the "
                    f"student's feature {student_shape} onto the teacher's "
                    f"{teacher_shape} ({self._what()}). Received an adapter "
                    f"output of shape {adapted}."
                )
        elif self._adapter_mode == "auto" and adapters.mismatch(
            student_shape, teacher_shape, self._match
        ):
            if called_on is not None and _tracing(called_on):
                raise ValueError(
                    f"{type(self).__name__}: adapter='auto' must be built before "
                    "training, but the tapped shapes were unknown when the "
                    f"Distiller was created (teacher {teacher_shape}, student "
                    f"{student_shape} at the first step). Call the teacher "
                    "and the student on a batch before creating the Distiller."
                )
            self.adapter = adapters.build_adapter(
                student_shape,
                teacher_shape,
                self._match,
                self.adapter_batchnorm,
                name=f"{self.name}_adapter",
            )
        self._adapted_shapes = (teacher_shape, student_shape)

    def _what(self):
        return {
            "shape": "the same shape",
            "spatial": "the same positions (all axes but the channels)",
            "channels": "the same channels (last axis)",
        }[self._match]

    def _not_one_tensor(self, role, outputs):
        name = getattr(self, f"{role}_layer_name") or "output"
        shapes = tree.map_structure(lambda x: tuple(getattr(x, "shape", ())), outputs)
        return (
            f"{type(self).__name__} compares one tensor per network. Received "
            f"several from the {role} ('{name}': {shapes}). Name one layer "
            f"with {role}_layer_name=."
        )

    def get_config(self):
        config = super().get_config()
        loss = self.loss
        if not isinstance(loss, str):
            loss = keras.losses.serialize(loss)
        adapter = self._adapter_mode
        if adapter == "layer":
            adapter = keras.saving.serialize_keras_object(self.adapter)
        config.update(
            {
                "loss": loss,
                "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name,
                "adapter": adapter,
                "adapter_batchnorm": self.adapter_batchnorm,
                "mask": self.mask,
            }
        )
        return config


def _mean_per_sample(values):
    if len(values.shape) > 1:
        values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
    return values


def _per_position_function(loss, function):
    """The loss as per-position values (a mean over positions), or `None`
    for a feature loss that does not split over positions."""
    if isinstance(loss, str) and loss in feature_functions.FEATURE_LOSSES:
        return feature_functions.PER_POSITION.get(loss)
    return function


def _resolve_loss(loss):
    """Returns `(per-sample function (teacher, student), what must match)`."""
    if isinstance(loss, str) and loss in feature_functions.FEATURE_LOSSES:
        return feature_functions.FEATURE_LOSSES[loss]
    if isinstance(loss, keras.losses.Loss):
        return loss.call, "shape"
    if isinstance(loss, str):
        try:
            function = keras.losses.get(loss)
        except ValueError:
            function = None
        if function is None:
            raise ValueError(
                "Expected a feature-loss name "
                f"{sorted(feature_functions.FEATURE_LOSSES)} or a Keras loss "
                f"name. Received: loss={loss!r}"
            )
        return function, "shape"
    if callable(loss):
        return loss, "shape"
    raise TypeError(
        "Expected `loss` to be a feature-loss name, a Keras loss name, a "
        "`keras.losses.Loss` or a function. Received: "
        f"loss={loss!r} of type {type(loss).__name__}"
    )


def _tracing(tensor):
    """Whether `tensor` belongs to a training step, where a new variable
    would be left out of the optimizer: a traced function (a `tf.function`,
    a `jax.jit`), or under PyTorch (eager) a feature that carries a
    gradient or a symbolic ("meta") one, as Keras builds the loss with."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if backend == "jax":
        import jax

        return isinstance(tensor, jax.core.Tracer)
    return bool(
        getattr(tensor, "requires_grad", False) or getattr(tensor, "is_meta", False)
    )
