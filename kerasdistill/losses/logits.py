"""Hinton knowledge distillation on the logits, as a class and as
per-sample functions."""

import keras
from keras import ops
from keras import tree

from kerasdistill import checks
from kerasdistill import reduction
from kerasdistill.losses import base
from kerasdistill.losses import divergences
from kerasdistill.losses import masking
from kerasdistill.losses import standardization
from kerasdistill.losses import top_k as top_k_losses


def logits_kl_divergence(teacher_logits, student_logits, temperature=3.0):
    """Per-sample Hinton distillation loss: `T^2 * KL(p_t || p_s)`.

    `p_t = softmax(teacher_logits / T)` and `p_s = softmax(student_logits /
    T)`, over the last axis, computed with log-softmax for stability. The
    `T^2` factor keeps the gradient scale independent of `T`.

    Args:
        teacher_logits: Teacher logits, shape `(batch, classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0` (a float or a variable).

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    loss = kerasdistill.losses.logits_kl_divergence(t, s, temperature=4.0)
    ```

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
        Network", 2015. https://arxiv.org/abs/1503.02531
    """
    log_p_t = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_p_s = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return kl * ops.square(temperature)


def logits_soft_cross_entropy(teacher_logits, student_logits, temperature=3.0):
    """Per-sample soft-target cross-entropy: `-T^2 * sum(p_t * log p_s)`.

    It differs from `logits_kl_divergence` by the teacher's entropy, a
    constant for the student, so both give the same gradients; this is the
    form written in Hinton et al. (2015).

    Args:
        teacher_logits: Teacher logits, shape `(batch, classes)`.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature `T > 0`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    loss = kerasdistill.losses.logits_soft_cross_entropy(t, s, 4.0)
    ```

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
        Network", 2015. https://arxiv.org/abs/1503.02531
    """
    p_t = ops.softmax(teacher_logits / temperature, axis=-1)
    log_p_s = ops.log_softmax(student_logits / temperature, axis=-1)
    return -ops.sum(p_t * log_p_s, axis=-1) * ops.square(temperature)


_LOGITS_LOSSES = {
    "kl_divergence": logits_kl_divergence,
    "soft_cross_entropy": logits_soft_cross_entropy,
}


_DIVERGENCES = {
    "reverse_kl": divergences.logits_reverse_kl,
    "generalized_jsd": divergences.logits_generalized_jsd,
    "skew_kl": divergences.logits_skew_kl,
    "skew_reverse_kl": divergences.logits_skew_reverse_kl,
    "tvd": divergences.logits_tvd,
}


LOSSES = (*_LOGITS_LOSSES, *_DIVERGENCES)


_TOP_K_LOSSES = {
    "kl_divergence": top_k_losses.top_k_kl_divergence,
    "soft_cross_entropy": top_k_losses.top_k_soft_cross_entropy,
}


@keras.saving.register_keras_serializable(package="kerasdistill")
class LogitsDistillation(masking.PositionWeightedLoss, base.TemperedLoss):
    """Hinton knowledge distillation on the final outputs, and the
    divergences of language-model distillation.

    The student matches the teacher's temperature-softened distribution
    `P = softmax(t / T)` with its own `Q = softmax(s / T)`, by default
    `T^2 * KL(P || Q)` per sample. Unlike Keras 3.15's
    `keras.distillation.LogitsDistillation`, the default
    `loss="kl_divergence"` is applied to the softened probabilities, not to
    the raw scaled logits. Every `loss` is multiplied by `T^2`:

    | `loss=` | per sample | reference |
    | --- | --- | --- |
    | `"kl_divergence"` | `KL(P || Q)` | Hinton et al. 2015 |
    | `"soft_cross_entropy"` | `-sum P log Q` (same gradients as KL) | Hinton et al. 2015 |
    | `"reverse_kl"` | `KL(Q || P)` | MiniLLM, ICLR 2024 |
    | `"generalized_jsd"` | `b KL(P || M) + (1 - b) KL(Q || M)`, `M = b P + (1 - b) Q` | GKD, ICLR 2024 |
    | `"skew_kl"` | `KL(P || a P + (1 - a) Q)` | DistiLLM, ICML 2024 |
    | `"skew_reverse_kl"` | `KL(Q || a Q + (1 - a) P)` | DistiLLM, ICML 2024 |
    | `"tvd"` | `1/2 sum |P - Q|` | Wen et al., ACL 2023 |

    `b = beta`, `a = skew`; `beta=0` / `beta=1` are the forward / reverse
    KL, as in TRL (see `kerasdistill.losses.divergences`).

    The temperature is a non-trainable `keras.Variable`: assigning
    `loss.temperature = 2.0` (or a `TemperatureScheduler`) changes the loss
    inside a compiled train function without tracing it again.

    Token logits `(batch, positions, vocabulary)` give one value per
    position, reduced as Keras reduces a masked sequence: the mean over the
    batch's unpadded positions (see `kerasdistill.losses.masking`). A
    position is padding where the `mask` input is 0, or where a `(batch,
    positions)` `sample_weight` is 0 (keras-hub's causal-LM preprocessors
    give the labels' padding mask as that weight); without either, the
    mean over every position.

    Args:
        temperature: Softmax temperature, a number > 0. Defaults to 3.0.
        loss: One of the names above; for a model with several outputs, a
            structure of those matching the outputs, with `None` to skip an
            output.
        from_logits: `True` when the models output logits; `False` when they
            end with a softmax (their log-probabilities are then used as
            logits).
        top_k: `None` (the full distributions), or keep the teacher's
            `top_k` largest logits per position, renormalised over them;
            the student's log-probabilities are taken over the full
            vocabulary and read at the teacher's top-k indices. With
            `"kl_divergence"` / `"soft_cross_entropy"` they are used as
            they are (`kerasdistill.losses.top_k_kl_divergence`: the
            student's mass outside the top k counts too); the other
            divergences compare two distributions on the top-k support, the
            student's renormalised over it
            (`kerasdistill.losses.top_k_divergence`). For token-level KD of
            language models: `kerasdistill.cache_teacher_outputs` then
            stores O(top_k) per token. `top_k` equal to the vocabulary size
            is the full loss (computed as such).
        logit_standardization: `True` to z-score each sample's logits
            (teacher's and student's) before the softened softmax, as in
            Sun et al. (CVPR 2024); `temperature` is then their base
            temperature. See `kerasdistill.losses.standardize_logits`.
        beta: `"generalized_jsd"`'s `beta`, a number in [0, 1]. Defaults to
            0.5 with that loss; refused with the others.
        skew: `"skew_kl"` / `"skew_reverse_kl"`'s `skew`, a number in
            [0, 1]. Defaults to 0.1 with those losses; refused with the
            others.
        mask: `None` (default), or where the batch's inputs hold the
            padding mask of token logits: the name of a dict input
            (`"padding_mask"` for keras-hub models) or the index of a list
            input. Needs logits of shape `(batch, positions, vocabulary)`.
        name: Optional name.

    Example:

    ```python
    distiller = kerasdistill.Distiller(
        teacher, student,
        distillation_losses=kerasdistill.LogitsDistillation(temperature=4.0),
    )
    token_kd = kerasdistill.LogitsDistillation(temperature=1.0, top_k=64)
    gkd = kerasdistill.LogitsDistillation(
        temperature=1.0, loss="generalized_jsd", beta=0.5, mask="padding_mask"
    )
    ```

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
        Network", 2015. https://arxiv.org/abs/1503.02531; logit
        standardization: Sun et al., "Logit Standardization in Knowledge
        Distillation", CVPR 2024. https://arxiv.org/abs/2403.01427; the
        divergences: Agarwal et al. (GKD), ICLR 2024,
        https://arxiv.org/abs/2306.13649; Gu et al. (MiniLLM), ICLR 2024,
        https://arxiv.org/abs/2306.08543; Ko et al. (DistiLLM), ICML 2024,
        https://arxiv.org/abs/2402.03898; Wen et al., ACL 2023,
        https://arxiv.org/abs/2307.15190
    """

    def __init__(
        self,
        temperature=3.0,
        loss="kl_divergence",
        from_logits=True,
        top_k=None,
        logit_standardization=False,
        beta=None,
        skew=None,
        mask=None,
        name=None,
        **kwargs,
    ):
        super().__init__(temperature, name=name, **kwargs)
        if top_k is not None:
            checks.check_positive_int(top_k, "top_k")
        standardization.check_option(logit_standardization)
        self.logit_standardization = logit_standardization
        if top_k is not None and logit_standardization:
            raise ValueError(
                "Expected top_k=None with logit_standardization=True: "
                "standardizing needs the mean and spread of every logit, "
                f"top-k keeps {top_k}. Received: top_k={top_k}, "
                "logit_standardization=True. Drop one of them."
            )
        specs = base.flat_specs(loss)
        for spec in specs:
            checks.check_choice(spec, LOSSES, "loss")
        if not specs:
            raise ValueError(
                "Expected at least one non-None entry in `loss`. "
                f"Received: loss={loss!r}"
            )
        masking.check_mask_key(mask, type(self).__name__)
        self.beta, self.skew = divergences.resolve_options(
            specs, beta, skew, type(self).__name__
        )
        self.loss = loss
        self.from_logits = from_logits
        self.top_k = top_k
        self.mask = mask

    def call(self, teacher_outputs, student_outputs, inputs=None):
        return self._values(teacher_outputs, student_outputs, inputs=inputs)

    def _values(
        self, teacher, student, training=None, inputs=None, position_weight=None
    ):
        """Per-sample values; the positions of token logits are reduced to
        their (masked, weighted) mean."""
        valid = None
        if self.mask is not None:
            valid = masking.padding_mask(inputs, self.mask, type(self).__name__)
        elif position_weight is not None:
            valid = ops.ones_like(position_weight)
        if top_k_losses.is_top_k_targets(teacher):  # a top-k cache
            targets = {k: v[..., : self.top_k] for k, v in teacher.items()}
            spec = base.flat_specs(self.loss)[0]
            student = self._log_if_probabilities(student)
            values = self._top_k_loss(spec, targets, student)
            return self._reduce(values, student, valid, position_weight)

        def per_output(spec, teacher, student, _):
            teacher = self._log_if_probabilities(teacher)
            student = self._log_if_probabilities(student)
            if self.logit_standardization:
                teacher = standardization.standardize_logits(teacher)
                student = standardization.standardize_logits(student)
            classes = student.shape[-1]
            if self.top_k is not None and (classes is None or self.top_k < classes):
                targets = top_k_losses.top_k_targets(teacher, self.top_k)
                values = self._top_k_loss(spec, targets, student)
            elif spec in _LOGITS_LOSSES:
                values = _LOGITS_LOSSES[spec](teacher, student, self._temperature)
            else:
                values = _DIVERGENCES[spec](
                    teacher, student, self._temperature, **self._options(spec)
                )
            return self._reduce(values, student, valid, position_weight)

        return base.sum_over_outputs(per_output, self.loss, teacher, student)

    def _top_k_loss(self, spec, targets, student):
        if spec in _TOP_K_LOSSES:
            return _TOP_K_LOSSES[spec](targets, student, self._temperature)
        return top_k_losses.top_k_divergence(
            targets, student, spec, self._temperature, **self._options(spec)
        )

    def _options(self, spec):
        option = divergences.OPTIONS.get(spec)
        return {} if option is None else {option: getattr(self, option)}

    def _reduce(self, values, logits, valid, position_weight):
        """`(batch,)`: the mean over the positions of token logits, over
        the unpadded ones (`valid`, weighted by `position_weight`) if
        given."""
        if valid is None:
            if len(values.shape) > 1:
                values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
            return values
        positions = valid.shape[1]
        if len(values.shape) != 2 or (
            None not in (positions, values.shape[1]) and positions != values.shape[1]
        ):
            raise ValueError(
                f"{type(self).__name__}: a padding mask (mask={self.mask!r}) "
                "or per-position sample weights need token logits of shape "
                "(batch, positions, vocabulary) with the mask's positions. "
                f"Received logits of shape {tuple(logits.shape)} and a mask "
                f"of shape {tuple(valid.shape)}. Pass mask=None and "
                "per-sample weights (batch,) for logits of another shape."
            )
        return masking.position_mean(values, valid, position_weight)

    def reduce_token_values(self, values, inputs=None, sample_weight=None):
        """The loss from per-position values `(batch, positions)` (this
        loss's divergence at each position, times `T^2`, as
        `kerasdistill.losses.chunked_token_losses` computes them without
        the logits), reduced as `compute_loss` reduces those of token
        logits: the padding `mask` read from `inputs`, `sample_weight` per
        sample `(batch,)` or per position `(batch, positions)`.

        Example:

        ```python
        loss = kerasdistill.LogitsDistillation(1.0)
        values = keras.ops.array([[1.0, 3.0, 9.0], [5.0, 7.0, 7.0]])
        loss.reduce_token_values(
            values, sample_weight=keras.ops.array([[1, 1, 0], [1, 0, 0]])
        )  # 3.0: the mean of 1, 3 and 5
        ```
        """
        per_sample, per_position = masking.split_sample_weight(sample_weight)
        valid = None
        if self.mask is not None:
            valid = masking.padding_mask(inputs, self.mask, type(self).__name__)
        elif per_position is not None:
            valid = ops.ones_like(per_position)
        values = self._reduce(values, values, valid, per_position)
        return reduction.weighted_mean(values, per_sample)

    def top_k_targets(self, teacher_outputs):
        """The teacher's top-k targets of this loss (`top_k` set, one
        output): what a cache of teacher outputs stores for it."""
        return top_k_losses.top_k_targets(
            self._log_if_probabilities(teacher_outputs), self.top_k
        )

    def _log_if_probabilities(self, outputs):
        return outputs if self.from_logits else ops.log(ops.maximum(outputs, 1e-12))

    def validate_outputs(self, teacher_outputs, student_outputs):
        name = type(self).__name__
        if top_k_losses.is_top_k_targets(teacher_outputs):
            self._validate_top_k_targets(teacher_outputs, student_outputs)
            return
        super().validate_outputs(teacher_outputs, student_outputs)
        checks.check_same_last_dim(teacher_outputs, student_outputs, "classes", name)
        if self.top_k is None:
            return
        for output in tree.flatten(student_outputs):
            classes = output.shape[-1]
            if classes is not None and self.top_k > classes:
                raise ValueError(
                    f"{name}: expected top_k <= the number of classes "
                    f"({classes}). Received: top_k={self.top_k}. Pass "
                    f"top_k={classes} (the full loss) or less."
                )

    def _validate_top_k_targets(self, targets, student_outputs):
        cached = targets[top_k_losses.TOP_K_LOGITS].shape[-1]
        if self.top_k is None or self.top_k > cached:
            raise ValueError(
                f"{type(self).__name__}(top_k={self.top_k}) received the "
                f"teacher's top {cached} logits per position (a cache built "
                "for a top-k loss), which cannot give "
                + (
                    "the full distributions"
                    if self.top_k is None
                    else f"its top {self.top_k}"
                )
                + ". Rebuild the cache with kerasdistill."
                "cache_teacher_outputs(teacher, data, distillation_losses) "
                "given this Distiller's losses."
            )
        if len(base.flat_specs(self.loss)) != 1 or tree.is_nested(student_outputs):
            raise ValueError(
                f"{type(self).__name__}: expected one student output for the "
                "cached top-k teacher logits. Received student outputs "
                f"{tree.map_structure(lambda t: tuple(t.shape), student_outputs)}"
                f" and loss={self.loss!r}."
            )

    def validate_model_compatibility(self, teacher, student):
        name = type(self).__name__
        checks.check_model_outputs_comparable(teacher, student, "classes", name)
        if self.from_logits:
            checks.check_outputs_are_logits(teacher, "teacher")
            checks.check_outputs_are_logits(student, "student")
        for model, role in ((teacher, "teacher"), (student, "student")):
            masking.check_model_has_mask(model, self.mask, role, name)
            if self.mask is None:
                continue
            for output in checks.symbolic_outputs(model) or []:
                if len(output.shape) != 3:
                    raise ValueError(
                        f"{name}: mask={self.mask!r} needs token logits "
                        "(batch, positions, vocabulary). Received the "
                        f"{role}'s output of shape {tuple(output.shape)}. "
                        "Pass mask=None for class logits."
                    )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "loss": self.loss,
                "from_logits": self.from_logits,
                "top_k": self.top_k,
                "logit_standardization": self.logit_standardization,
                "beta": self.beta,
                "skew": self.skew,
                "mask": self.mask,
            }
        )
        return config


class SingleOutputLogitsLoss(base.TemperedLoss):
    """A loss on the logits of one output, with a schedulable temperature."""

    def validate_outputs(self, teacher_outputs, student_outputs):
        name = type(self).__name__
        for outputs, role in (
            (teacher_outputs, "teacher"),
            (student_outputs, "student"),
        ):
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
