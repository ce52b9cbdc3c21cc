"""Non-trainable scalar variables that a compiled training step reads:
alpha (`student_loss_weight`), the loss weights, an EMA decay. Assigning one
changes the next step without tracing the train function again.
"""

import keras
import numpy as np
from keras import ops

from kerasdistill import checks


def non_trainable(name, value):
    """A float32 scalar `keras.Variable` that no optimizer updates.

    Example:

    ```python
    alpha = kerasdistill.variables.non_trainable("student_loss_weight", 0.5)
    alpha.assign(0.1)  # read by the next compiled step
    ```
    """
    return keras.Variable(float(value), dtype="float32", trainable=False, name=name)


def read(variable):
    """A scalar variable's value as a Python float (outside a trace).

    Example:

    ```python
    kerasdistill.variables.read(distiller.student_loss_weight)  # 0.5
    ```
    """
    return float(np.asarray(ops.convert_to_numpy(variable)))


class StudentLossWeight:
    """The `student_loss_weight` property of a model that keeps alpha in
    the variable `_student_loss_weight`.

    Example:

    ```python
    class Trainer(kerasdistill.variables.StudentLossWeight, keras.Model):
        def __init__(self):
            super().__init__()
            self._student_loss_weight = kerasdistill.variables.non_trainable(
                "student_loss_weight", 0.5
            )
    ```
    """

    @property
    def student_loss_weight(self):
        """`alpha`, a variable; assign a number in [0, 1] to change it."""
        return self._student_loss_weight

    @student_loss_weight.setter
    def student_loss_weight(self, value):
        checks.check_unit_interval(value, "student_loss_weight")
        self._student_loss_weight.assign(float(value))
