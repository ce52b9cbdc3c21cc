"""Divergences between the teacher's and the student's softened
distributions, the choices of language-model distillation today (TRL's
`GKDTrainer`, MiniLLM, DistiLLM): reverse KL, generalized Jensen-Shannon,
skew KL and skew reverse KL, total variation.

`P = softmax(teacher_logits / T)` and `Q = softmax(student_logits / T)`
over the last axis (classes, or a language model's vocabulary). Every
divergence is computed from the log-probabilities (`log_softmax`; the
log of a mixture by `logaddexp`), so logits of +-1e4 stay finite in
float32, and is multiplied by `T^2`, as Hinton's forward KL is, so that
the gradients keep their scale when `T` changes:

| `loss=` | divergence | reference |
| --- | --- | --- |
| `"kl_divergence"` | `KL(P || Q)` | Hinton et al. 2015 |
| `"reverse_kl"` | `KL(Q || P)` | Gu et al. (MiniLLM), ICLR 2024 |
| `"generalized_jsd"` | `b KL(P || M) + (1 - b) KL(Q || M)`, `M = b P + (1 - b) Q` | Agarwal et al. (GKD), ICLR 2024 |
| `"skew_kl"` | `KL(P || a P + (1 - a) Q)` | Ko et al. (DistiLLM), ICML 2024 |
| `"skew_reverse_kl"` | `KL(Q || a Q + (1 - a) P)` | Ko et al. (DistiLLM), ICML 2024 |
| `"tvd"` | `1/2 sum |P - Q|` | Wen et al., ACL 2023 |

with `b = beta` and `a = skew`, both in `[0, 1]`. At its endpoints the
generalized JSD follows TRL: `beta=0` is `KL(P || Q)` and `beta=1` is
`KL(Q || P)` (the formula itself vanishes there).

Each is a per-sample function here (`logits_reverse_kl`, ...) and a
`loss=` of `kerasdistill.LogitsDistillation`,
`kerasdistill.losses.top_k_divergence` (on the teacher's top-k logits) and
`kerasdistill.losses.chunked_token_divergence` (from hidden states, over
chunks of positions).
"""

import math
import numbers

from keras import ops

# The option each divergence takes, and its default (TRL's beta, DistiLLM's
# skew); the others take none.
OPTIONS = {"generalized_jsd": "beta", "skew_kl": "skew", "skew_reverse_kl": "skew"}
DEFAULTS = {"beta": 0.5, "skew": 0.1}
NAMES = (
    "kl_divergence",
    "reverse_kl",
    "generalized_jsd",
    "skew_kl",
    "skew_reverse_kl",
    "tvd",
)


def logits_reverse_kl(teacher_logits, student_logits, temperature=1.0):
    """Per-sample reverse KL: `T^2 * KL(Q || P)`.

    `P = softmax(teacher_logits / T)`, `Q = softmax(student_logits / T)`.
    Reverse KL is mode-seeking: the student puts its mass where the teacher
    has much, rather than spreading it over everything the teacher allows,
    which MiniLLM finds better for generative language models.

    Args:
        teacher_logits: Teacher logits, shape `(..., classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0` (a float or a variable).

    Returns:
        A tensor of the logits' shape without the last axis.

    Example:

    ```python
    loss = kerasdistill.losses.logits_reverse_kl(teacher_logits, student_logits)
    ```

    Reference:
        Gu, Dong, Wei & Huang, "MiniLLM: Knowledge Distillation of Large
        Language Models", ICLR 2024. https://arxiv.org/abs/2306.08543
    """
    return _logits_divergence(teacher_logits, student_logits, temperature, "reverse_kl")


def logits_generalized_jsd(teacher_logits, student_logits, temperature=1.0, beta=0.5):
    """Per-sample generalized Jensen-Shannon divergence `T^2 * JSD(beta)`.

    `JSD(beta) = beta KL(P || M) + (1 - beta) KL(Q || M)` with the mixture
    `M = beta P + (1 - beta) Q`, `P = softmax(teacher_logits / T)`,
    `Q = softmax(student_logits / T)` (GKD's eq. 1). `log M` is the
    `logaddexp` of the weighted log-probabilities. As TRL's `GKDTrainer`
    does, `beta=0` is the forward `KL(P || Q)` and `beta=1` the reverse
    `KL(Q || P)`; in between it goes from mode-covering to mode-seeking.

    Args:
        teacher_logits: Teacher logits, shape `(..., classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0`.
        beta: A Python number in `[0, 1]`. Defaults to 0.5 (TRL's default).

    Returns:
        A tensor of the logits' shape without the last axis.

    Example:

    ```python
    loss = kerasdistill.losses.logits_generalized_jsd(
        teacher_logits, student_logits, beta=0.9
    )
    ```

    Reference:
        Agarwal et al., "On-Policy Distillation of Language Models:
        Learning from Self-Generated Mistakes" (GKD), ICLR 2024.
        https://arxiv.org/abs/2306.13649
    """
    beta = check_fraction(beta, "beta")
    return _logits_divergence(
        teacher_logits, student_logits, temperature, "generalized_jsd", beta=beta
    )


def logits_skew_kl(teacher_logits, student_logits, temperature=1.0, skew=0.1):
    """Per-sample skew KL: `T^2 * KL(P || skew P + (1 - skew) Q)`.

    `P = softmax(teacher_logits / T)`, `Q = softmax(student_logits / T)`.
    Mixing some of the teacher into the student's distribution bounds the
    divergence and its gradients where the student gives a token almost no
    probability (DistiLLM). `skew=0` is the forward `KL(P || Q)`.

    Args:
        teacher_logits: Teacher logits, shape `(..., classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0`.
        skew: A Python number in `[0, 1]`. Defaults to 0.1 (DistiLLM's).

    Returns:
        A tensor of the logits' shape without the last axis.

    Example:

    ```python
    loss = kerasdistill.losses.logits_skew_kl(teacher_logits, student_logits)
    ```

    Reference:
        Ko, Kim, Chen & Yun, "DistiLLM: Towards Streamlined Distillation
        for Large Language Models", ICML 2024.
        https://arxiv.org/abs/2402.03898
    """
    skew = check_fraction(skew, "skew")
    return _logits_divergence(
        teacher_logits, student_logits, temperature, "skew_kl", skew=skew
    )


def logits_skew_reverse_kl(teacher_logits, student_logits, temperature=1.0, skew=0.1):
    """Per-sample skew reverse KL: `T^2 * KL(Q || skew Q + (1 - skew) P)`.

    `P = softmax(teacher_logits / T)`, `Q = softmax(student_logits / T)`.
    The reverse KL of `logits_reverse_kl` against a mixture that keeps
    some of the student's own distribution (DistiLLM). `skew=0` is the
    reverse `KL(Q || P)`.

    Args:
        teacher_logits: Teacher logits, shape `(..., classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0`.
        skew: A Python number in `[0, 1]`. Defaults to 0.1 (DistiLLM's).

    Returns:
        A tensor of the logits' shape without the last axis.

    Example:

    ```python
    loss = kerasdistill.losses.logits_skew_reverse_kl(
        teacher_logits, student_logits, skew=0.1
    )
    ```

    Reference:
        Ko, Kim, Chen & Yun, "DistiLLM: Towards Streamlined Distillation
        for Large Language Models", ICML 2024.
        https://arxiv.org/abs/2402.03898
    """
    skew = check_fraction(skew, "skew")
    return _logits_divergence(
        teacher_logits, student_logits, temperature, "skew_reverse_kl", skew=skew
    )


def logits_tvd(teacher_logits, student_logits, temperature=1.0):
    """Per-sample total variation distance: `T^2 * 1/2 sum |P - Q|`.

    `P = softmax(teacher_logits / T)`, `Q = softmax(student_logits / T)`.
    A symmetric f-divergence bounded by 1 (before `T^2`), studied for
    sequence-level distillation by Wen et al.

    Args:
        teacher_logits: Teacher logits, shape `(..., classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of the logits' shape without the last axis.

    Example:

    ```python
    loss = kerasdistill.losses.logits_tvd(teacher_logits, student_logits)
    ```

    Reference:
        Wen, Li, Du & Mou, "f-Divergence Minimization for Sequence-Level
        Knowledge Distillation", ACL 2023. https://arxiv.org/abs/2307.15190
    """
    return _logits_divergence(teacher_logits, student_logits, temperature, "tvd")


def divergence(log_p, log_q, loss, beta=None, skew=None):
    """The divergence `loss` between two distributions given by their
    log-probabilities over the last axis (no temperature, no `T^2`): what
    every form of these losses (full, top-k, chunked) reduces to.

    `beta` / `skew` are Python numbers, checked by the caller
    (`resolve_options`).
    """
    if loss == "kl_divergence":
        return _kl(log_p, log_q)
    if loss == "reverse_kl":
        return _kl(log_q, log_p)
    if loss == "generalized_jsd":
        if beta == 0.0:
            return _kl(log_p, log_q)
        if beta == 1.0:
            return _kl(log_q, log_p)
        log_m = _log_mixture(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    if loss == "skew_kl":
        return _kl(log_p, _log_mixture(log_p, log_q, skew))
    if loss == "skew_reverse_kl":
        return _kl(log_q, _log_mixture(log_q, log_p, skew))
    if loss == "tvd":
        return 0.5 * ops.sum(ops.abs(ops.exp(log_p) - ops.exp(log_q)), axis=-1)
    raise ValueError(
        f"Expected `loss` to be one of {list(NAMES)}. Received: loss={loss!r}"
    )


def resolve_options(losses, beta, skew, name):
    """`(beta, skew)` for the divergences `losses` (names): each checked
    (a number in [0, 1]) or defaulted where a loss takes it, `None` where
    none does; a value given for no loss that takes it is refused."""
    resolved = {}
    for option, value in (("beta", beta), ("skew", skew)):
        users = sorted({loss for loss in losses if OPTIONS.get(loss) == option})
        if value is None:
            resolved[option] = DEFAULTS[option] if users else None
            continue
        if not users:
            takers = sorted(k for k, v in OPTIONS.items() if v == option)
            raise ValueError(
                f"{name}: `{option}` is an option of loss="
                f"{' or '.join(repr(t) for t in takers)}. Received: "
                f"{option}={value!r} with loss={sorted(set(losses))}. Remove "
                f"`{option}`, or pick a loss that uses it."
            )
        resolved[option] = check_fraction(value, option)
    return resolved["beta"], resolved["skew"]


def check_fraction(value, name):
    """`value` as a float in [0, 1], or a `TypeError` / `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Expected `{name}` to be a Python number in [0, 1]. Received: "
            f"{name}={value!r} of type {type(value).__name__}. Pass e.g. "
            f"{name}={DEFAULTS[name]}."
        )
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Expected `{name}` in [0, 1]. Received: {name}={value!r}. Pass a "
            f"number between 0 and 1, e.g. {name}={DEFAULTS[name]}."
        )
    return float(value)


def _logits_divergence(teacher_logits, student_logits, temperature, loss, **options):
    log_p = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_q = ops.log_softmax(student_logits / temperature, axis=-1)
    return divergence(log_p, log_q, loss, **options) * ops.square(temperature)


def _kl(log_a, log_b):
    """`KL(A || B) = sum A (log A - log B)` over the last axis."""
    return ops.sum(ops.exp(log_a) * (log_a - log_b), axis=-1)


def _log_mixture(log_a, log_b, weight):
    """`log(weight A + (1 - weight) B)`, one `logaddexp`; at the endpoints
    the distribution itself (no `log 0`)."""
    if weight == 1.0:
        return log_a
    if weight == 0.0:
        return log_b
    return ops.logaddexp(log_a + math.log(weight), log_b + math.log1p(-weight))
