"""Token-level distillation on the teacher's k largest logits.

Language models predict over vocabularies of 30k-250k tokens, so the full
teacher distributions of a batch, `(batch, sequence, vocabulary)`, dwarf
everything else a step holds, and a cache of them on disk costs
O(vocabulary) per token. LLM distillation keeps few logits per position
instead: the teacher's `k` largest ("Top-K KD" in Anshumann et al. 2025),
or 256 sampled by probability in Gemma 3, renormalised over those kept.
The teacher's *targets* are then a pair of `(..., k)` tensors, its logits
and their vocabulary indices, which `kerasdistill.cache_teacher_outputs`
stores as they are (O(k) per token).

The student is not truncated: its log-probabilities are taken over the full
vocabulary, then read at the teacher's top-k indices (as in Gemma 3: "the
teacher's target distribution is set to zero probability for non-sampled
logits, and renormalized"; the student's is not), so the probability the
student puts outside the teacher's top k still lowers those it puts on
them. With `k` equal to the vocabulary size this is the full loss.

References:
    Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge
    Distillation in LLMs", ACL 2025; Gemma Team, "Gemma 3 Technical
    Report", 2025, section 2.2. https://arxiv.org/abs/2503.19786
"""

import keras
from keras import ops

from kerasdistill.losses import divergences

TOP_K_LOGITS = "top_k_logits"


TOP_K_INDICES = "top_k_indices"


def top_k_targets(teacher_logits, k):
    """The teacher's `k` largest logits per position and their indices.

    Args:
        teacher_logits: Logits of shape `(..., vocabulary)`.
        k: How many to keep, `1 <= k <= vocabulary`.

    Returns:
        A dict `{"top_k_logits": (..., k) float, "top_k_indices": (..., k)
        int32}`, largest first: the form `kerasdistill.LogitsDistillation
        (top_k=k)` takes as teacher outputs, and the form in which
        `kerasdistill.cache_teacher_outputs` stores them.

    Example:

    ```python
    targets = kerasdistill.losses.top_k_targets(teacher_logits, k=64)
    targets["top_k_indices"].shape  # (batch, sequence, 64)
    ```
    """
    values, indices = ops.top_k(teacher_logits, k, sorted=True)
    return {TOP_K_LOGITS: values, TOP_K_INDICES: ops.cast(indices, "int32")}


def is_top_k_targets(outputs):
    """Whether `outputs` are top-k targets (from `top_k_targets` or a cache)."""
    return isinstance(outputs, dict) and set(outputs) == {TOP_K_LOGITS, TOP_K_INDICES}


def top_k_kl_divergence(teacher_targets, student_logits, temperature=1.0):
    """Per-position `T^2 * KL(p_t^k || p_s)` on the teacher's top-k logits.

    `p_t^k = softmax(top-k teacher logits / T)`, renormalised over the `k`
    kept tokens; `p_s = softmax(student_logits / T)` over the full
    vocabulary, read at the teacher's top-k indices:
    `T^2 * sum_{i in top-k} p_t^k(i) * (log p_t^k(i) - log p_s(i))`.

    Args:
        teacher_targets: The dict of `top_k_targets`.
        student_logits: Student logits, shape `(..., vocabulary)`.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of the student logits' shape without the last axis.

    Example:

    ```python
    targets = kerasdistill.losses.top_k_targets(teacher_logits, 64)
    loss = kerasdistill.losses.top_k_kl_divergence(targets, student_logits)
    ```

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
        Network", 2015. https://arxiv.org/abs/1503.02531; Anshumann et
        al., "Sparse Logit Sampling: Accelerating Knowledge Distillation
        in LLMs", ACL 2025 (Top-K KD).
    """
    log_p_t, log_p_s = _top_k_log_probabilities(
        teacher_targets, student_logits, temperature
    )
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return kl * ops.square(temperature)


def top_k_soft_cross_entropy(teacher_targets, student_logits, temperature=1.0):
    """Per-position `-T^2 * sum_{i in top-k} p_t^k(i) * log p_s(i)`.

    The soft cross-entropy form of `top_k_kl_divergence` (they differ by
    the entropy of `p_t^k`, a constant for the student).

    Args:
        teacher_targets: The dict of `top_k_targets`.
        student_logits: Student logits, shape `(..., vocabulary)`.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of the student logits' shape without the last axis.

    Example:

    ```python
    targets = kerasdistill.losses.top_k_targets(teacher_logits, 64)
    loss = kerasdistill.losses.top_k_soft_cross_entropy(targets, student_logits)
    ```

    Reference:
        Gemma Team, "Gemma 3 Technical Report", 2025, section 2.2.
        https://arxiv.org/abs/2503.19786
    """
    log_p_t, log_p_s = _top_k_log_probabilities(
        teacher_targets, student_logits, temperature
    )
    return -ops.sum(ops.exp(log_p_t) * log_p_s, axis=-1) * ops.square(temperature)


def top_k_divergence(
    teacher_targets,
    student_logits,
    loss="reverse_kl",
    temperature=1.0,
    beta=None,
    skew=None,
):
    """Per-position `T^2 * D(P^k || Q^k)` on the teacher's top-k support.

    `P^k = softmax(top-k teacher logits / T)` over the `k` kept tokens.
    The student's log-probabilities are taken over the full vocabulary,
    `log p_s = s / T - logsumexp(s / T)`, read at the teacher's top-k
    indices and renormalised over them, `log Q^k = log p_s -
    logsumexp_top-k(log p_s)`: both are distributions on the same `k`
    tokens, which the reverse, mixed and total-variation divergences need.
    `D` is one of `kerasdistill.losses.divergences` (`"reverse_kl"`,
    `"generalized_jsd"`, `"skew_kl"`, `"skew_reverse_kl"`, `"tvd"`, or
    `"kl_divergence"`, which is then `KL(P^k || Q^k)`).

    `top_k_kl_divergence` (what `LogitsDistillation(top_k=k)` computes for
    `loss="kl_divergence"`) does not renormalise the student: it is
    `KL(P^k || Q^k) - log Q(top-k)`, which also pulls the student's mass
    outside the teacher's top k onto it. With `k` equal to the vocabulary
    both are the full divergence.

    Args:
        teacher_targets: The dict of `top_k_targets`.
        student_logits: Student logits, shape `(..., vocabulary)`.
        loss: The divergence's name. Defaults to `"reverse_kl"`.
        temperature: Softmax temperature `T > 0`.
        beta: `"generalized_jsd"`'s beta in [0, 1] (default 0.5).
        skew: The skew divergences' skew in [0, 1] (default 0.1).

    Returns:
        A tensor of the student logits' shape without the last axis.

    Example:

    ```python
    targets = kerasdistill.losses.top_k_targets(teacher_logits, 64)
    loss = kerasdistill.losses.top_k_divergence(
        targets, student_logits, loss="generalized_jsd", beta=0.5
    )
    ```

    Reference:
        Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge
        Distillation in LLMs", ACL 2025 (Top-K KD); the divergences' papers
        in `kerasdistill.losses.divergences`.
    """
    if loss not in divergences.NAMES:
        raise ValueError(
            f"Expected `loss` to be one of {list(divergences.NAMES)}. "
            f"Received: loss={loss!r}"
        )
    beta, skew = divergences.resolve_options([loss], beta, skew, "top_k_divergence")
    log_p, log_q = _top_k_log_probabilities(
        teacher_targets, student_logits, temperature
    )
    log_q = log_q - ops.logsumexp(log_q, axis=-1, keepdims=True)
    value = divergences.divergence(log_p, log_q, loss, beta=beta, skew=skew)
    return value * ops.square(temperature)


def _top_k_log_probabilities(teacher_targets, student_logits, temperature):
    """`log p_t^k` and the student's full-vocabulary `log p_s` at the top-k
    indices: the student's scaled logits there minus their log-sum-exp over
    the vocabulary (no `(..., vocabulary)` log-softmax is formed)."""
    log_p_t = ops.log_softmax(teacher_targets[TOP_K_LOGITS] / temperature, axis=-1)
    scaled = student_logits / temperature
    log_p_s = _gather_last_axis(scaled, teacher_targets[TOP_K_INDICES]) - ops.logsumexp(
        scaled, axis=-1, keepdims=True
    )
    return log_p_t, log_p_s


def _gather_last_axis(x, indices):
    """`take_along_axis(x, indices, axis=-1)` as one gather from the
    flattened `x` (under TensorFlow, 8x faster with its gradient than
    `keras.ops.take_along_axis`, which broadcasts and transposes `x`)."""
    # int64 flat positions: batch x sequence x vocabulary passes 2**31 in
    # LLM batches. JAX without x64 has int32 only (and no such arrays).
    dtype = "int32" if keras.backend.backend() == "jax" else "int64"
    k = ops.shape(indices)[-1]
    rows = ops.reshape(ops.cast(indices, dtype), (-1, k))
    offsets = ops.arange(ops.shape(rows)[0], dtype=dtype)[:, None] * ops.shape(x)[-1]
    gathered = ops.take(ops.reshape(x, (-1,)), rows + offsets)
    return ops.reshape(gathered, ops.shape(indices))
