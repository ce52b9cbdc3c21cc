"""The training view: the augmented (and mixed) inputs that the teacher and
the student both see at a training step.

Function matching (Beyer et al. 2022, "Knowledge distillation: A good
teacher is patient and consistent") trains the student to match the
teacher on the *same* randomly augmented view of each input, for many
epochs. The `Distiller` makes that view once per training step from its
`augmentation` layer (any Keras layer or model: `RandomTranslation`,
`RandAugment`, a `keras.Sequential` of them) and its `mixing` layer
(`keras.layers.MixUp` or `keras.layers.CutMix`, which also mix the labels),
and feeds it to both networks. Evaluation and prediction see the inputs as
they are. The layers belong to the `Distiller`, never to the student.
"""

import keras
from keras import ops
from keras import tree

from kerasdistill import checks
from kerasdistill import labels as labels_module
from kerasdistill import taps
from kerasdistill.data import cache
from kerasdistill.data import input_batches


class TrainingView:
    """Makes a training step's inputs: `augmentation`, then `mixing`.

    `keras.layers.MixUp` mixes inputs of any rank with float values (images,
    signals, tabular rows, sequences of vectors): each sample becomes
    `w * x_i + (1 - w) * x_j` and so does its label, with `w ~ Beta(alpha,
    alpha)` drawn and `j` permuted as Keras's layer draws them (its `alpha`
    and seed generator); Keras's own layer is image-only, so the
    combination is written here in `keras.ops`. `keras.layers.CutMix` pastes
    image patches and stays image-only. Inputs of integer token ids are
    refused: a convex combination of ids means nothing.

    Args:
        augmentation: A `keras.layers.Layer` (or model) applied with
            `training=True`, or `None`.
        mixing: A `keras.layers.MixUp` or `keras.layers.CutMix`, or `None`.
        student: The student, whose symbolic inputs (when known) the
            layers are checked against.

    Example:

    ```python
    view = TrainingView(keras.layers.RandomTranslation(0.1, 0.1), None, student)
    images, transformation = view.make(images)
    ```
    """

    def __init__(self, augmentation, mixing, student):
        _check_augmentation(augmentation, student)
        _check_mixing(mixing, student)
        self.augmentation = augmentation
        self.mixing = mixing

    @property
    def active(self):
        return self.augmentation is not None or self.mixing is not None

    def make(self, inputs):
        """Returns `(view, transformation)`: the augmented, mixed inputs
        and the mixing transformation (`None` without mixing)."""
        view = inputs
        if self.augmentation is not None:
            view = self.augmentation(view, training=True)
        if self.mixing is None:
            return view, None
        if isinstance(self.mixing, keras.layers.CutMix):
            transformation = self.mixing.get_random_transformation(view, training=True)
            return (
                self.mixing.transform_images(view, transformation, training=True),
                transformation,
            )
        transformation = _mix_up_transformation(self.mixing, view)
        return _mix(view, transformation), transformation

    def mix_labels(self, labels, has_label, transformation):
        """`(labels, has_label)` mixed as the inputs were: the labels must
        be one-hot or soft, float `(batch, classes)`; a mixed sample has a
        label when both samples it mixes have one (`has_label` `None`: all
        do)."""
        _check_soft_labels(labels.shape, labels.dtype, type(self.mixing).__name__)
        labels = _mix(ops.cast(labels, "float32"), transformation)
        if has_label is not None:
            has_label = has_label * ops.take(
                has_label, transformation["permutation_order"], axis=0
            )
        return labels, has_label

    def check_fit(self, x, y):
        """Before `fit()`: refuses cached teacher outputs, and integer
        labels when mixing (from the arrays or the dataset's spec)."""
        if not self.active:
            return
        if input_batches.is_tf_dataset(x):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(x.element_spec)
        if cache.is_cached(x):
            raise ValueError(CACHED_MESSAGE)
        if labels_module.is_partial(y):  # arrays or a dataset's spec
            y = y[labels_module.LABELS]
        if self.mixing is not None and y is not None and not tree.is_nested(y):
            dtype = getattr(y, "dtype", None)
            if hasattr(y, "shape") and dtype is not None:
                _check_soft_labels(y.shape, dtype, type(self.mixing).__name__)


def _mix_up_transformation(mix_up, inputs):
    """MixUp's permutation and Beta(alpha, alpha) weights for a batch of
    any rank, drawn as `keras.layers.MixUp.get_random_transformation`
    draws them for images."""
    batch = ops.shape(inputs)[0]
    permutation = keras.random.shuffle(
        ops.arange(0, batch, dtype="int64"), seed=mix_up.generator
    )
    weight = keras.random.beta(
        (batch,), mix_up.alpha, mix_up.alpha, seed=mix_up.generator
    )
    return {"mix_weight": weight, "permutation_order": permutation}


def _mix(values, transformation):
    """`w * values + (1 - w) * values[permutation]`, sample by sample."""
    weight = ops.cast(transformation["mix_weight"], values.dtype)
    weight = ops.reshape(weight, (-1, *[1] * (len(values.shape) - 1)))
    shuffled = ops.take(values, transformation["permutation_order"], axis=0)
    return weight * values + (1.0 - weight) * shuffled


CACHED_MESSAGE = (
    "Expected inputs, not cached teacher outputs, for a Distiller with an "
    "`augmentation` or `mixing` layer: the teacher must see the augmented "
    "view of each step, which a cache (computed once, on the inputs as "
    "they are) cannot give. Fit on the inputs themselves, or build the "
    "Distiller without augmentation to use kerasdistill.cache_teacher_outputs."
)


def _check_augmentation(augmentation, student):
    if augmentation is None:
        return
    if not isinstance(augmentation, keras.layers.Layer):
        raise TypeError(
            "Expected `augmentation` to be a Keras layer or model (e.g. "
            "keras.layers.RandomTranslation(0.1, 0.1), or a keras.Sequential "
            f"of augmentation layers). Received: {augmentation!r} of type "
            f"{type(augmentation).__name__}."
        )
    mixing = [
        layer.name
        for layer in [augmentation, *_all_layers(augmentation)]
        if _is_mixing(layer)
    ]
    if mixing:
        raise ValueError(
            f"Expected `augmentation` to change each input alone. Received "
            f"the mixing layers {mixing}, which mix inputs across the batch "
            "and need the labels mixed to match. Pass the MixUp / CutMix "
            "layer as `mixing=` instead (with one-hot labels)."
        )
    spec = _student_input_spec(student)
    if spec is None:
        return
    batch = ops.zeros((2, *spec.shape[1:]), dtype=spec.dtype)
    try:  # on two samples, so that the layer's own checks run
        output = augmentation(batch, training=True)
    except Exception as error:  # any failure of the user's layer on the inputs
        raise ValueError(
            f"Expected `augmentation` to accept the student's inputs, of "
            f"shape {tuple(spec.shape)}. Calling {augmentation.name} on them "
            f"failed: {error} Image augmentation layers take (batch, height, "
            "width, channels): wrap them in a keras.Sequential that reshapes "
            "flat inputs (keras.layers.Reshape) and back."
        ) from error
    if not _same_shape(getattr(output, "shape", None), spec.shape):
        raise ValueError(
            "Expected `augmentation` to return inputs of the shape the student "
            f"takes, {tuple(spec.shape)}. Received an output of shape "
            f"{getattr(output, 'shape', type(output).__name__)}. End it with "
            "a keras.layers.Reshape (or Resizing) back to the inputs' shape."
        )


def _check_mixing(mixing, student):
    if mixing is None:
        return
    if not _is_mixing(mixing):
        raise TypeError(
            "Expected `mixing` to be keras.layers.MixUp(...) or "
            f"keras.layers.CutMix(...). Received: {mixing!r} of type "
            f"{type(mixing).__name__}. Pass other augmentation as "
            "`augmentation=`."
        )
    for spec in checks.symbolic_inputs(student) or []:
        if "int" in keras.backend.standardize_dtype(spec.dtype):
            raise ValueError(
                f"Expected float inputs for {type(mixing).__name__}, which "
                "mixes inputs as convex combinations. Received a student "
                f"with {spec.dtype} inputs of shape {tuple(spec.shape)} "
                "(token ids?), whose combination means nothing. Leave "
                "`mixing` out, or mix embeddings inside the model."
            )
    spec = _student_input_spec(student)
    if (
        isinstance(mixing, keras.layers.CutMix)
        and spec is not None
        and len(spec.shape) != 4
    ):
        raise ValueError(
            f"Expected image inputs (batch, height, width, channels) for "
            f"CutMix, which pastes image patches. Received a student with "
            f"inputs of shape {tuple(spec.shape)}. Use keras.layers.MixUp() "
            "(any input rank), give the student image inputs, or leave "
            "`mixing` out."
        )


def _check_soft_labels(shape, dtype, layer_name):
    dtype = keras.backend.standardize_dtype(dtype)
    if len(shape) != 2 or shape[-1] == 1 or not dtype.startswith(("float", "bfloat")):
        raise ValueError(
            f"Expected one-hot or soft labels, float (batch, classes), for "
            f"{layer_name} to mix them as it mixes the inputs. Received labels "
            f"of shape {tuple(shape)} and dtype {dtype}. Pass one-hot labels "
            "(keras.utils.to_categorical(y, classes)) with loss=keras.losses."
            "CategoricalCrossentropy(from_logits=True), or fit on the inputs "
            "alone with student_loss_weight=0: the student loss is then left "
            "out and the student learns from the teacher on the mixed inputs."
        )


def _is_mixing(layer):
    return isinstance(layer, (keras.layers.MixUp, keras.layers.CutMix))


def _student_input_spec(student):
    """The student's one symbolic input, or `None` (several, unknown, or
    of an unknown size beyond the batch)."""
    if not taps.is_graph_network(student) or len(student.inputs) != 1:
        return None
    spec = student.inputs[0]
    if any(size is None for size in spec.shape[1:]):
        return None
    return spec


def _same_shape(first, second):
    if first is None or len(first) != len(second):
        return False
    return all(a is None or b is None or a == b for a, b in zip(first, second))


def _all_layers(layer):
    found = []
    for inner in getattr(layer, "layers", None) or []:
        found.append(inner)
        found.extend(_all_layers(inner))
    return found
