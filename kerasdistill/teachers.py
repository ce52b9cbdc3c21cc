"""Several teachers: each runs once per step, and their outputs and tapped
features are either averaged (weighted) before the losses, or each teacher
gets its own loss terms, weighted.

`kerasdistill.Distiller(teacher=[t1, t2], ..., teacher_weights=[2, 1],
teacher_combination="average" | "per_teacher")` uses this module.
"""

from keras import tree

from kerasdistill import checks
from kerasdistill import taps

COMBINATIONS = ("average", "per_teacher")


class TeacherEnsemble:
    """Runs every teacher once and combines them.

    With `"average"`, returns `(outputs, {layer_name: features})` where each
    tensor is the weighted average over the teachers (so every teacher must
    have the same output structure and a layer of that name, of the same
    shape). With `"per_teacher"`, returns the list of each teacher's
    `(outputs, features)`; `weighted_parts` pairs them with their weights.

    Args:
        teachers: The teacher models.
        layer_names: Names of the layers to tap in every teacher.
        weights: One weight >= 0 per teacher (normalized to sum to 1).
        combination: `"average"` or `"per_teacher"`.

    Example:

    ```python
    ensemble = TeacherEnsemble([t1, t2], ["block2_out"], [2.0, 1.0], "average")
    outputs, features = ensemble(x, training=False)
    ```
    """

    def __init__(self, teachers, layer_names, weights, combination):
        self.networks = [
            taps.TappedNetwork(teacher, layer_names, f"teacher {i}")
            for i, teacher in enumerate(teachers)
        ]
        self.layer_names = self.networks[0].layer_names
        self.weights = normalized(weights)
        self.combination = combination
        if combination == "average":
            for name in [None, *layer_names]:
                _check_same_shapes(teachers, name)

    def __call__(self, inputs, training):
        parts = [network(inputs, training=training) for network in self.networks]
        if self.combination == "per_teacher":
            return parts
        outputs = _weighted_sum(self.weights, [p[0] for p in parts])
        features = {
            name: _weighted_sum(self.weights, [p[1][name] for p in parts])
            for name in parts[0][1]
        }
        return outputs, features


def teacher_network(teachers, layer_names, weights, combination):
    """A `TappedNetwork` for one teacher, a `TeacherEnsemble` for several."""
    if len(teachers) == 1:
        return taps.TappedNetwork(teachers[0], layer_names, "teacher")
    return TeacherEnsemble(teachers, layer_names, weights, combination)


def weighted_parts(network, teacher_taps):
    """`[(weight, (outputs, features)), ...]`: one pair per teacher for a
    per-teacher ensemble, else the single (possibly averaged) teacher."""
    if isinstance(network, TeacherEnsemble) and network.combination == "per_teacher":
        return list(zip(network.weights, teacher_taps))
    return [(1.0, teacher_taps)]


def check_teachers(teacher, teacher_weights, teacher_combination):
    """Returns `(teachers, weights)` as lists, with clear errors.

    Example:

    ```python
    teachers, weights = check_teachers([t1, t2], [2.0, 1.0], "average")
    ```
    """
    checks.check_choice(teacher_combination, COMBINATIONS, "teacher_combination")
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if not teachers:
        raise ValueError(
            "Expected a teacher model or a non-empty list of them. Received: "
            f"teacher={teacher!r}"
        )
    for i, model in enumerate(teachers):
        checks.check_model(model, "teacher" if len(teachers) == 1 else f"teacher {i}")
    if teacher_weights is None:
        weights = [1.0] * len(teachers)
    else:
        weights = (
            list(teacher_weights)
            if isinstance(teacher_weights, (list, tuple))
            else [teacher_weights]
        )
    if len(weights) != len(teachers):
        raise ValueError(
            f"Expected one weight per teacher. Received {len(teachers)} "
            f"teacher(s) and teacher_weights={teacher_weights}."
        )
    for weight in weights:
        checks.check_non_negative(weight, "each teacher weight")
    if sum(weights) <= 0:
        raise ValueError(
            f"Expected teacher weights with a positive sum. Received: "
            f"teacher_weights={teacher_weights}"
        )
    return teachers, [float(w) for w in weights]


def normalized(weights):
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def _weighted_sum(weights, values):
    return tree.map_structure(
        lambda *xs: sum(w * x for w, x in zip(weights, xs)), *values
    )


def _check_same_shapes(teachers, layer_name):
    specs = [
        taps.feature_spec(t, layer_name, f"teacher {i}") for i, t in enumerate(teachers)
    ]
    if any(spec is None for spec in specs):
        return  # a subclassed teacher never built: checked when averaging
    shapes = [tree.map_structure(lambda x: tuple(x.shape[1:]), spec) for spec in specs]
    if any(shape != shapes[0] for shape in shapes):
        what = f"layer '{layer_name}'" if layer_name else "outputs"
        raise ValueError(
            f"Expected every teacher's {what} to have the same shape to "
            f"average them (teacher_combination='average'). Received: "
            f"{shapes}. Tap layers of one shape, or use "
            "teacher_combination='per_teacher'."
        )
