"""Decoupled knowledge distillation (DKD), as a class and as a per-sample
function."""

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill.losses import logits
from kerasdistill.losses import standardization

_MASK = 1e9


def decoupled_kd(
    teacher_logits, student_logits, labels, alpha=1.0, beta=8.0, temperature=4.0
):
    """Per-sample decoupled KD: `T^2 * (alpha * TCKD + beta * NCKD)`.

    TCKD is the KL divergence between the binary distributions
    `[p_target, 1 - p_target]` of teacher and student; NCKD the KL divergence
    between their distributions over the non-target classes (softmax over
    those classes alone). All at temperature `T`.

    Args:
        teacher_logits: Teacher logits `(batch, classes)`.
        student_logits: Student logits, same shape.
        labels: Integer labels `(batch,)` / `(batch, 1)`, or one-hot or
            soft labels `(batch, classes)` (mixed by MixUp / CutMix, or
            smoothed), whose target class is their largest entry.
        alpha: Weight of TCKD.
        beta: Weight of NCKD.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.decoupled_kd(t, s, y, alpha=1.0, beta=8.0)
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


@keras.saving.register_keras_serializable(package="kerasdistill")
class DKD(logits.SingleOutputLogitsLoss):
    """Decoupled knowledge distillation: the target-class (TCKD) and the
    non-target-class (NCKD) parts of Hinton's KL, weighted separately.

    Per sample `T^2 * (alpha * TCKD + beta * NCKD)`; see
    `kerasdistill.losses.decoupled_kd`. It needs the labels (the
    target class), so it cannot train on a transfer set without them, nor
    on partial labels. With soft labels (a `Distiller`'s `mixing=MixUp()`
    or `CutMix()`, label smoothing) the target class is the label's largest
    entry: for a mixed sample, the class with the larger share.

    Args:
        alpha: Weight of TCKD, >= 0. Defaults to 1.0.
        beta: Weight of NCKD, >= 0. Defaults to 8.0 (the paper's CIFAR-100
            setting).
        temperature: Softmax temperature, > 0. Defaults to 4.0.
        logit_standardization: `True` to z-score each sample's logits
            before the softened softmaxes (Sun et al., CVPR 2024;
            `kerasdistill.losses.standardize_logits`).
        name: Optional name.

    Example:

    ```python
    distiller = kerasdistill.Distiller(
        teacher, student, kerasdistill.DKD(alpha=1.0, beta=8.0, temperature=4.0)
    )
    ```

    Reference:
        Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation",
        CVPR 2022. https://arxiv.org/abs/2203.08679; logit standardization:
        Sun et al., CVPR 2024. https://arxiv.org/abs/2403.01427
    """

    def __init__(
        self,
        alpha=1.0,
        beta=8.0,
        temperature=4.0,
        logit_standardization=False,
        name=None,
        **kwargs,
    ):
        super().__init__(temperature, name=name, **kwargs)
        checks.check_non_negative(alpha, "alpha")
        checks.check_non_negative(beta, "beta")
        standardization.check_option(logit_standardization)
        self.alpha = alpha
        self.beta = beta
        self.logit_standardization = logit_standardization

    def call(self, teacher_outputs, student_outputs, y_true=None):
        if y_true is None:
            raise ValueError(
                "DKD needs labels to split the target class from the others. "
                "Received a batch without labels. Pass `y` to `fit()`, or use "
                "kerasdistill.LogitsDistillation or DIST on a transfer set."
            )
        if self.logit_standardization:
            teacher_outputs = standardization.standardize_logits(teacher_outputs)
            student_outputs = standardization.standardize_logits(student_outputs)
        return decoupled_kd(
            teacher_outputs,
            student_outputs,
            y_true,
            self.alpha,
            self.beta,
            self._temperature,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "beta": self.beta,
                "logit_standardization": self.logit_standardization,
            }
        )
        return config


def _target_mask(labels, classes):
    """One-hot float mask of the target class from sparse labels, or from
    one-hot or soft labels (their largest entry: for a mixed label, the
    class with the larger share)."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] not in (None, 1):
        labels = ops.argmax(labels, axis=-1)
    labels = ops.reshape(labels, (-1,))
    return ops.one_hot(ops.cast(labels, "int32"), classes, dtype="float32")


def _binary_log_probabilities(logits, mask):
    """`log p_target`, `log (1 - p_target)` from logits, stably."""
    log_all = ops.logsumexp(logits, axis=-1)
    target = ops.sum(logits * mask, axis=-1) - log_all
    others = ops.logsumexp(logits - _MASK * mask, axis=-1) - log_all
    return target, others
