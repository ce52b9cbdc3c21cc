"""What the student's forward pass of a training step hands to the loss.

In a training step, Keras's trainers call `model(x, training=True)` and pass
what it returns, as `y_pred`, to `compute_loss()` and `compute_metrics()`.
The `Distiller` returns a `StudentPass` there: the student's outputs, the
features its tapped layers produced in that same pass, and the inputs the
student saw (the augmented, mixed view that the teacher must see too). The
loss reads everything from `y_pred`; nothing travels beside Keras's own
arguments. Outside training (`predict()`, `evaluate()`, `model(x)`) the
`Distiller` returns the student's plain outputs.

A `StudentPass` is a named tuple, so every backend's trainer carries it as
it carries any nest of tensors (JAX returns it from its gradient function
as auxiliary data).
"""

from typing import Any
from typing import NamedTuple


class StudentPass(NamedTuple):
    """The student's pass of a training step.

    Attributes:
        outputs: The student's outputs.
        features: `{layer_name: tensor}`: the tapped layers' outputs.
        view: The inputs the student saw: the batch's inputs, augmented
            and mixed when the `Distiller` has `augmentation` / `mixing`.
        mixing: The mixing layer's transformation (to mix the labels as
            the inputs were mixed), or `None`.

    Example:

    ```python
    step = distiller(x, training=True)
    step.outputs.shape  # the student's logits
    ```
    """

    outputs: Any
    features: dict
    view: Any
    mixing: Any
