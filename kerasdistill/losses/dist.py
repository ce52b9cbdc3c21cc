"""DIST: distillation of the teacher's relations between classes and
between samples, as a class and as a per-sample function."""

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill.losses import logits
from kerasdistill.losses.feature_functions import require_batch


def dist(teacher_logits, student_logits, beta=1.0, gamma=1.0, temperature=1.0):
    """Per-sample DIST: `T^2 * (beta * inter + gamma * intra)`.

    With `Y = softmax(logits / T)`, the inter-class term of sample `i` is
    `1 - pearson(Y_s[i, :], Y_t[i, :])` (over classes); the intra-class
    term is `1/C sum_j (1 - pearson(Y_s[:, j], Y_t[:, j]))` (over the
    batch), which is not a per-sample quantity: sample `i` gets its share
    `1/C sum_j (1 - b * u_ij * v_ij)`, with `u`, `v` the columns centered
    and L2-normalized over the batch, so that the mean over the batch is
    the paper's term (and `sample_weight` weights each sample's share).

    Args:
        teacher_logits: Teacher logits `(batch, classes)`.
        student_logits: Student logits, same shape; batch >= 2 when
            `gamma > 0`.
        beta: Weight of the inter-class relation.
        gamma: Weight of the intra-class relation.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.dist(t, s, beta=1.0, gamma=1.0)
    ```

    Reference:
        Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger
        Teacher", NeurIPS 2022 (eqs. 6-9). https://arxiv.org/abs/2205.10536
    """
    y_t = ops.softmax(teacher_logits / temperature, axis=-1)
    y_s = ops.softmax(student_logits / temperature, axis=-1)
    inter = 1.0 - ops.sum(_centered_unit(y_s, -1) * _centered_unit(y_t, -1), -1)
    value = beta * inter
    if gamma:
        y_s = require_batch(y_s, 2, "DIST's intra-class relation (gamma > 0)")
        batch = ops.cast(ops.shape(y_s)[0], "float32")
        products = _centered_unit(y_s, 0) * _centered_unit(y_t, 0)
        value = value + gamma * ops.mean(1.0 - batch * products, axis=-1)
    return value * ops.square(temperature)


@keras.saving.register_keras_serializable(package="kerasdistill")
class DIST(logits.SingleOutputLogitsLoss):
    """DIST: the student matches the teacher's relations (Pearson
    correlations) between classes within a sample and between samples
    within a class, rather than its exact probabilities, which helps when
    the teacher is much stronger.

    Per sample `T^2 * (beta * inter + gamma * intra)`; see
    `kerasdistill.losses.dist` (the intra-class term is computed over
    the batch and shared out per sample; it needs a batch of at least 2).

    Args:
        beta: Weight of the inter-class relation, >= 0. Defaults to 1.0.
        gamma: Weight of the intra-class relation, >= 0. Defaults to 1.0.
        temperature: Softmax temperature, > 0. Defaults to 1.0 (the paper's
            ImageNet setting).
        name: Optional name.

    Example:

    ```python
    distiller = kerasdistill.Distiller(
        teacher, student, kerasdistill.DIST(beta=1.0, gamma=1.0, temperature=1.0)
    )
    ```

    Reference:
        Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger
        Teacher", NeurIPS 2022. https://arxiv.org/abs/2205.10536
    """

    def __init__(self, beta=1.0, gamma=1.0, temperature=1.0, name=None, **kwargs):
        super().__init__(temperature, name=name, **kwargs)
        checks.check_non_negative(beta, "beta")
        checks.check_non_negative(gamma, "gamma")
        self.beta = beta
        self.gamma = gamma

    def call(self, teacher_outputs, student_outputs):
        return dist(
            teacher_outputs,
            student_outputs,
            self.beta,
            self.gamma,
            self._temperature,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "gamma": self.gamma})
        return config


def _centered_unit(x, axis):
    x = x - ops.mean(x, axis=axis, keepdims=True)
    norm = ops.sqrt(
        ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-16)
    )
    return x / norm
