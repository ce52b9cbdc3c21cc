"""Argument and compatibility checks shared by the public objects.

Every check raises a `ValueError` or `TypeError` whose message says what
was expected, what was received and, where it is not obvious, how to fix it.
"""

import math
import numbers

import keras
from keras import tree

from kerasdistill import taps


def check_number(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Expected `{name}` to be a number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if math.isnan(value):
        raise ValueError(f"Expected `{name}` to be a number. Received: nan")


def check_positive(value, name):
    check_number(value, name)
    if value <= 0:
        raise ValueError(f"Expected {name} > 0. Received: {name}={value}")


def check_non_negative(value, name):
    check_number(value, name)
    if value < 0:
        raise ValueError(f"Expected {name} >= 0. Received: {name}={value}")


def check_unit_interval(value, name):
    check_number(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected {name} in [0, 1]. Received: {name}={value}")


def check_open_unit_interval(value, name):
    check_number(value, name)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"Expected {name} in (0, 1), both ends excluded. Received: {name}={value}"
        )


def check_integer(value, name, minimum):
    """A `TypeError` for a non-integer (a bool included), a `ValueError`
    for an integer below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Expected `{name}` to be an integer >= {minimum}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}. Received: {name}={value}")


def check_positive_int(value, name):
    check_integer(value, name, minimum=1)


def as_list(value, name):
    """`value` as a list (one item, or the items of a list or tuple); a
    `ValueError` for `None`."""
    if value is None:
        raise ValueError(
            f"Expected `{name}` to be given. Received: {name}=None. Pass e.g. "
            "distillation_losses=kerasdistill.LogitsDistillation()."
        )
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(
            f"Expected `{name}` to be one of {sorted(choices)}. "
            f"Received: {name}={value!r}"
        )


class NotAModelError(TypeError, ValueError):
    """A `TypeError` (our convention for a wrong type) that is also a
    `ValueError`, which `keras.distillation` raises for a teacher or
    student that is not a model: code written for either catches it."""


def check_model(model, role):
    if not isinstance(model, keras.Model):
        raise NotAModelError(
            f"Expected the {role} to be a `keras.Model`. Received: "
            f"{role}={model!r} of type {type(model).__name__}. Wrap layers "
            "or functions in `keras.Model(inputs, outputs)`."
        )


def check_not_shared(teacher, student):
    """Refuses a student that is the teacher, or that shares weights with it
    (built on the teacher's layer objects): freezing the teacher would
    freeze those weights in the student too, silently."""
    if teacher is student:
        raise ValueError(
            "Expected the teacher and the student to be two models. Received "
            f"the same model '{student.name}' for both: the teacher is frozen, "
            "so nothing would train. To distil a model into itself, use "
            "kerasdistill.SelfDistiller(model, ...), which keeps a snapshot or "
            "moving-average copy as the teacher."
        )
    teacher_weights = {id(v): v for v in teacher.weights}
    shared = [v.path for v in student.weights if id(v) in teacher_weights]
    if shared:
        raise ValueError(
            "Expected the student to have weights of its own. Received a "
            f"student '{student.name}' that shares {len(shared)} weight(s) with "
            f"the teacher '{teacher.name}' (e.g. {shared[:3]}): it was built "
            "on the teacher's layers, which are frozen with the teacher. Copy "
            "them instead: `copy = keras.models.clone_model(layer_or_model); "
            "copy.set_weights(layer_or_model.get_weights())`."
        )


def check_same_inputs(first, second, roles, expected, fix):
    """Compares the symbolic input shapes of two models when both have them
    (an unknown size matches any); `roles` name the two models in the
    message, `expected` says what is expected and `fix` how to fix it."""
    first_inputs, second_inputs = symbolic_inputs(first), symbolic_inputs(second)
    if first_inputs is None or second_inputs is None:
        return
    first_shapes = [tuple(t.shape) for t in first_inputs]
    second_shapes = [tuple(t.shape) for t in second_inputs]
    compatible = len(first_shapes) == len(second_shapes) and all(
        len(a) == len(b) and all(i is None or j is None or i == j for i, j in zip(a, b))
        for a, b in zip(first_shapes, second_shapes)
    )
    if not compatible:
        raise ValueError(
            f"Expected {expected}. Received: {roles[0]} input shapes "
            f"{first_shapes}, {roles[1]} input shapes {second_shapes}. {fix}"
        )


def check_same_structure(first, second, context):
    try:
        tree.assert_same_structure(first, second)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{context}: expected the teacher and the student outputs to "
            f"have the same structure. Received: teacher="
            f"{tree.map_structure(_describe, first)}, student="
            f"{tree.map_structure(_describe, second)}."
        ) from error


def check_same_last_dim(teacher_outputs, student_outputs, what, context):
    for teacher, student in zip(
        tree.flatten(teacher_outputs), tree.flatten(student_outputs)
    ):
        _compare_last_dim(teacher.shape, student.shape, what, context)


def check_model_outputs_comparable(teacher, student, what, context):
    """Compares the symbolic output shapes when both models have them."""
    teacher_outputs = symbolic_outputs(teacher)
    student_outputs = symbolic_outputs(student)
    if teacher_outputs is None or student_outputs is None:
        return
    if len(teacher_outputs) != len(student_outputs):
        raise ValueError(
            f"{context}: expected the teacher and the student to have the "
            f"same number of outputs. Received: teacher has "
            f"{len(teacher_outputs)}, student has {len(student_outputs)}."
        )
    for t, s in zip(teacher_outputs, student_outputs):
        _compare_last_dim(t.shape, s.shape, what, context)


def check_outputs_are_logits(model, role, fix=None):
    """Refuses a model that ends with a softmax when logits are expected;
    `fix` replaces the default advice (for `LogitsDistillation`)."""
    fix = fix or (
        "Pass `from_logits=False` to LogitsDistillation, or remove the "
        "softmax from the model."
    )
    for output in symbolic_outputs(model) or []:
        layer = taps.output_layer(model, output)
        activation = getattr(layer, "activation", None)
        if isinstance(layer, keras.layers.Softmax) or (
            activation is keras.activations.softmax
        ):
            raise ValueError(
                f"Expected the {role}'s outputs to be logits, but its layer "
                f"'{layer.name}' applies a softmax, so they are "
                f"probabilities. {fix}"
            )


def _compare_last_dim(teacher_shape, student_shape, what, context):
    t, s = teacher_shape[-1:] or (1,), student_shape[-1:] or (1,)
    if t[0] is not None and s[0] is not None and t[0] != s[0]:
        raise ValueError(
            f"{context}: expected the teacher and the student to predict "
            f"the same number of {what}. Received: teacher output shape "
            f"{tuple(teacher_shape)}, student output shape "
            f"{tuple(student_shape)}. Give the student the teacher's output "
            "size, or compare intermediate features with "
            "FeatureDistillation instead."
        )


def check_dict_inputs(x, model, role):
    """Refuses a dict of inputs that lacks a key for one of `model`'s
    inputs, such as the feature dicts of a tensorflow_datasets split."""
    if not isinstance(x, dict):
        return
    inputs = symbolic_inputs(model)
    if inputs is None or isinstance(model.input, dict):
        return
    names = [tensor.name for tensor in inputs]
    if any(name not in x for name in names):
        raise ValueError(
            f"Expected the inputs to be tensors, or a dict with the {role}'s "
            f"input names {names} as keys. Received a dict with keys "
            f"{sorted(x)}, such as the feature dicts of a tensorflow_datasets "
            "split. Map it to (inputs, labels) tuples, e.g. "
            "dataset.map(lambda f: (f['image'], f['label'])), load the split "
            "with as_supervised=True, or use kerasdistill.tfds_data.prepare."
        )


def symbolic_inputs(model):
    """A functional or built Sequential model's symbolic inputs, as a list;
    `None` for a model without them (subclassed)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def symbolic_outputs(model):
    """The symbolic outputs, as `symbolic_inputs`."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return list(outputs) if outputs else None


def _describe(x):
    return getattr(x, "shape", x)


def check_teacher_takes_student_inputs(teacher, student):
    """`check_same_inputs` for a teacher and the student it teaches."""
    check_same_inputs(
        teacher,
        student,
        ("teacher", "student"),
        expected="the teacher to take the student's inputs",
        fix="Give both models the same inputs, or wrap the teacher in a model "
        "that maps the student's inputs to its own (e.g. keras.layers.Resizing).",
    )


def loss_weights(weights, count):
    """The `count` distillation loss weights: `weights` (a number or a
    list, each >= 0), or 1.0 each when `weights` is None."""
    weights = [1.0] * count if weights is None else weights
    weights = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if len(weights) != count:
        raise ValueError(
            f"Expected one weight per distillation loss. Received {count} "
            f"distillation_losses and {len(weights)} "
            f"distillation_loss_weights={weights}."
        )
    for weight in weights:
        check_non_negative(weight, "each distillation loss weight")
    return weights
