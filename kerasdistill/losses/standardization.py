"""Logit standardization (Sun et al., CVPR 2024): each sample's logits
z-scored before the temperature-softened softmax."""

from keras import ops

from kerasdistill import checks

_EPSILON = 1e-7


def standardize_logits(logits, epsilon=_EPSILON):
    """Each sample's logits z-scored over the classes: `(z - mean(z)) / std(z)`.

    With standardized logits the softened softmax `softmax(Z(z) / T)` no
    longer asks the student to match the teacher's logit range, only their
    relations: a small student whose logits cannot reach the teacher's
    magnitude is not penalized for it. `T` is the paper's base temperature.
    `std` is the population standard deviation over the last axis (the
    paper's `sigma`), computed as `sqrt(var + epsilon)` so that constant
    logits (a dead ReLU layer) have a finite gradient.

    Args:
        logits: Logits `(batch, classes)` (any rank; the last axis is the
            classes).
        epsilon: Added to the variance, >= 0. Defaults to 1e-7.

    Returns:
        A tensor of the logits' shape, with mean 0 and standard deviation
        1 over the last axis.

    Example:

    ```python
    z = kerasdistill.losses.standardize_logits(logits)
    ```

    Reference:
        Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge
        Distillation", CVPR 2024 (eq. 9, Algorithm 1).
        https://arxiv.org/abs/2403.01427
    """
    checks.check_non_negative(epsilon, "epsilon")
    logits = ops.convert_to_tensor(logits)
    mean = ops.mean(logits, axis=-1, keepdims=True)
    variance = ops.var(logits, axis=-1, keepdims=True)
    return (logits - mean) / ops.sqrt(variance + epsilon)


def check_option(value):
    if not isinstance(value, bool):
        raise TypeError(
            "Expected `logit_standardization` to be True or False. Received: "
            f"logit_standardization={value!r} of type {type(value).__name__}"
        )
