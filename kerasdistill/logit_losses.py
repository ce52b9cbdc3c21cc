"""Logit-level losses after Hinton's: decoupled KD (DKD) and DIST, each as a
class and as a per-sample function.

Both take logits (`from_logits` models), soften them by a temperature that
is a non-trainable variable (as in `LogitsDistillation`), and return one
value per sample.
"""

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill import losses
from kerasdistill.feature_losses import require_batch

_MASK = 1e9


def decoupled_kd(teacher_logits, student_logits, labels, alpha=1.0, beta=8.0,
                 temperature=4.0):
    """Per-sample decoupled KD: `T^2 * (alpha * TCKD + beta * NCKD)`.

    TCKD is the KL divergence between the binary distributions
    `[p_target, 1 - p_target]` of teacher and student; NCKD the KL divergence
    between their distributions over the non-target classes (softmax over
    those classes alone). All at temperature `T`.

    Args:
        teacher_logits: Teacher logits `(batch, classes)`.
        student_logits: Student logits, same shape.
        labels: Integer labels `(batch,)` / `(batch, 1)`, or one-hot
            `(batch, classes)`.
        alpha: Weight of TCKD.
        beta: Weight of NCKD.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.logit_losses.decoupled_kd(t, s, y, alpha=1.0, beta=8.0)
    ```

    Reference:
        Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation",
        CVPR 2022 (eqs. 1-7). https://arxiv.org/abs/2203.08679
    """
    teacher_logits = ops.convert_to_tensor(teacher_logits)
    student_logits = ops.convert_to_tensor(student_logits)
    mask = _target_mask(labels, ops.shape(student_logits)[-1])
    z_t, z_s = teacher_logits / temperature, student_logits / temperature
    target_t, other_t = _binary_log_probabilities(z_t, mask)
    target_s, other_s = _binary_log_probabilities(z_s, mask)
    tckd = ops.exp(target_t) * (target_t - target_s) + ops.exp(other_t) * (
        other_t - other_s
    )
    log_t = ops.log_softmax(z_t - _MASK * mask, axis=-1)
    log_s = ops.log_softmax(z_s - _MASK * mask, axis=-1)
    nckd = ops.sum((1.0 - mask) * ops.exp(log_t) * (log_t - log_s), axis=-1)
    return (alpha * tckd + beta * nckd) * ops.square(temperature)


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
    kerasdistill.logit_losses.dist(t, s, beta=1.0, gamma=1.0)
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


class _SingleOutputLogitsLoss(losses.TemperedLoss):
    """A loss on the logits of one output, with a schedulable temperature."""

    def validate_outputs(self, teacher_outputs, student_outputs):
        name = type(self).__name__
        for outputs, role in ((teacher_outputs, "teacher"), (student_outputs, "student")):
            if not hasattr(outputs, "shape") or len(outputs.shape) != 2:
                raise ValueError(
                    f"{name} expects logits of shape (batch, classes) from "
                    f"one output. Received from the {role}: "
                    f"{getattr(outputs, 'shape', type(outputs).__name__)}."
                )
        checks.check_same_last_dim(teacher_outputs, student_outputs, "classes", name)

    def validate_model_compatibility(self, teacher, student):
        name = type(self).__name__
        checks.check_model_outputs_comparable(teacher, student, "classes", name)
        fix = f"{name} compares logits: remove the softmax from the model."
        checks.check_outputs_are_logits(teacher, "teacher", fix=fix)
        checks.check_outputs_are_logits(student, "student", fix=fix)

@keras.saving.register_keras_serializable(package="kerasdistill")
class DKD(_SingleOutputLogitsLoss):
    """Decoupled knowledge distillation: the target-class (TCKD) and the
    non-target-class (NCKD) parts of Hinton's KL, weighted separately.

    Per sample `T^2 * (alpha * TCKD + beta * NCKD)`; see
    `kerasdistill.logit_losses.decoupled_kd`. It needs the labels (the
    target class), so it cannot train on a transfer set without them.

    Args:
        alpha: Weight of TCKD, >= 0. Defaults to 1.0.
        beta: Weight of NCKD, >= 0. Defaults to 8.0 (the paper's CIFAR-100
            setting).
        temperature: Softmax temperature, > 0. Defaults to 4.0.
        name: Optional name.

    Example:

    ```python
    distiller = kerasdistill.Distiller(
        teacher, student, kerasdistill.DKD(alpha=1.0, beta=8.0, temperature=4.0)
    )
    ```

    Reference:
        Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation",
        CVPR 2022. https://arxiv.org/abs/2203.08679
    """

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, name=None, **kwargs):
        super().__init__(temperature, name=name, **kwargs)
        checks.check_non_negative(alpha, "alpha")
        checks.check_non_negative(beta, "beta")
        self.alpha = alpha
        self.beta = beta

    def call(self, teacher_outputs, student_outputs, y_true=None):
        if y_true is None:
            raise ValueError(
                "DKD needs labels to split the target class from the others. "
                "Received a batch without labels. Pass `y` to `fit()`, or use "
                "kerasdistill.LogitsDistillation or DIST on a transfer set."
            )
        return decoupled_kd(
            teacher_outputs, student_outputs, y_true, self.alpha, self.beta,
            self._temperature,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "beta": self.beta})
        return config


@keras.saving.register_keras_serializable(package="kerasdistill")
class DIST(_SingleOutputLogitsLoss):
    """DIST: the student matches the teacher's relations (Pearson
    correlations) between classes within a sample and between samples
    within a class, rather than its exact probabilities, which helps when
    the teacher is much stronger.

    Per sample `T^2 * (beta * inter + gamma * intra)`; see
    `kerasdistill.logit_losses.dist` (the intra-class term is computed over
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
            teacher_outputs, student_outputs, self.beta, self.gamma,
            self._temperature,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "gamma": self.gamma})
        return config


def _target_mask(labels, classes):
    """One-hot float mask of the target class from sparse or one-hot labels."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] not in (None, 1):
        return ops.cast(labels, "float32")
    labels = ops.reshape(labels, (-1,))
    return ops.one_hot(ops.cast(labels, "int32"), classes, dtype="float32")


def _binary_log_probabilities(logits, mask):
    """`log p_target`, `log (1 - p_target)` from logits, stably."""
    log_all = ops.logsumexp(logits, axis=-1)
    target = ops.sum(logits * mask, axis=-1) - log_all
    others = ops.logsumexp(logits - _MASK * mask, axis=-1) - log_all
    return target, others


def _centered_unit(x, axis):
    x = x - ops.mean(x, axis=axis, keepdims=True)
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-16))
    return x / norm
