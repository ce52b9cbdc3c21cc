"""Which teacher outputs a cache stores as top-k targets (O(k) per token).

A cache of a language model's teacher outputs at full size costs
`sequence * vocabulary` floats per sample. When every loss that reads the
teacher's final outputs is a `LogitsDistillation(top_k=k)`, those losses
see nothing but the teacher's top-k logits and indices, so the cache
stores these (`kerasdistill.losses.top_k_targets`, with the largest `k` of
the losses; a loss with a smaller `k` reads the first `k`).
"""

import warnings

from kerasdistill import checks
from kerasdistill.losses import base
from kerasdistill.losses import keras_compat
from kerasdistill.losses import logits


def top_k_loss(distillation_losses, teacher):
    """The `LogitsDistillation` whose `top_k_targets` the cache stores for
    `teacher`'s outputs, or `None` to store them in full.

    Example:

    ```python
    loss = kerasdistill.LogitsDistillation(top_k=32)
    kerasdistill.data.top_k_outputs.top_k_loss([loss], teacher)  # loss
    ```
    """
    if distillation_losses is None:
        return None
    if not isinstance(distillation_losses, (list, tuple)):
        distillation_losses = [distillation_losses]
    losses = [keras_compat.as_distillation_loss(loss) for loss in distillation_losses]
    readers = [
        loss for loss in losses if getattr(loss, "teacher_layer_name", None) is None
    ]
    top_k = [
        loss
        for loss in readers
        if isinstance(loss, logits.LogitsDistillation) and loss.top_k is not None
    ]
    if not top_k:
        return None
    reason = None
    if len(top_k) < len(readers):
        others = sorted({type(loss).__name__ for loss in readers if loss not in top_k})
        reason = f"the losses {others} also read the teacher's full outputs"
    elif (
        len({(loss.from_logits, tuple(base.flat_specs(loss.loss))) for loss in top_k})
        > 1
    ):
        reason = "the top-k losses differ in `from_logits` or `loss`"
    else:
        outputs = checks.symbolic_outputs(teacher)
        if outputs is not None and len(outputs) != 1:
            reason = f"the teacher has {len(outputs)} outputs (top-k caches hold one)"
    if reason is not None:
        warnings.warn(
            "The distillation losses ask for the teacher's top-k logits, but "
            f"the cache stores its full outputs because {reason}; it costs "
            "O(vocabulary) per token. Cache for the top-k losses alone to "
            "store O(k).",
            stacklevel=3,
        )
        return None
    return max(top_k, key=lambda loss: loss.top_k)
