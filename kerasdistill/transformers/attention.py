"""Attention transfer for transformers: the student's self-attention
distributions are pulled toward the teacher's (TinyBERT's MSE, MiniLM's
KL), read from the layers' `return_attention_scores` in the networks' single
forward pass (`kerasdistill.taps`).

keras-hub's `TransformerEncoder` (BERT, DistilBERT, RoBERTa, ...) and
`keras.layers.MultiHeadAttention` return the attention probabilities (after
the softmax, before dropout), shape `(batch, heads, queries, keys)`. They do
not return the raw scores before the softmax, nor each head's values, so
MiniLM's value relation cannot be read from them, and keras-hub's decoder
layers (`TransformerDecoder`, the LLM decoders) return no attention at all:
those are refused, by name.
"""

import keras
from keras import ops

from kerasdistill import taps
from kerasdistill.losses import masking

_EPSILON = 1e-12


def attention_mse(teacher, student, valid=None, position_weight=None):
    """TinyBERT's attention loss: the mean squared difference of the
    attention matrices, averaged over heads, `1/h sum_i MSE(A_i^S, A_i^T)`.

    TinyBERT fits the scores before the softmax; the attention layers of
    Keras and keras-hub return them after it, so this is the paper's loss
    on the attention probabilities (the variant its section 3.1 compares).
    With a padding mask, the mean runs over the pairs of unpadded positions.

    Args:
        teacher: The teacher's attention, `(batch, heads, queries, keys)`.
        student: The student's, same shape.
        valid: Optional `(batch, positions)` mask, 1 for a token, 0 for
            padding (queries and keys are the same positions).
        position_weight: Optional `(batch, positions)` weights of the
            query positions.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.transformers.attention_mse(teacher_scores, student_scores)
    ```

    Reference:
        Jiao et al., "TinyBERT: Distilling BERT for Natural Language
        Understanding", Findings of EMNLP 2020 (eq. 3).
        https://arxiv.org/abs/1909.10351
    """
    teacher, student, valid = _tensors(teacher, student, valid)
    keys = valid[:, None, None, :]
    squares = ops.sum(ops.square(student - teacher) * keys, axis=-1)  # (b, h, t)
    rows = ops.mean(squares, axis=1) / ops.maximum(
        ops.sum(valid, axis=-1, keepdims=True), _EPSILON
    )
    return masking.masked_mean(rows, valid, position_weight)


def attention_kl(teacher, student, valid=None, position_weight=None):
    """MiniLM's self-attention distribution transfer: the KL divergence
    from the teacher's attention distribution of each query to the
    student's, averaged over heads and queries,
    `1/(A_h |x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t})`.

    With a padding mask, padded queries do not count (padded keys have
    probability 0 in both).

    Args:
        teacher: The teacher's attention probabilities,
            `(batch, heads, queries, keys)`.
        student: The student's, same shape.
        valid: Optional `(batch, positions)` mask, 1 for a token.
        position_weight: Optional `(batch, positions)` weights of the
            query positions.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.transformers.attention_kl(teacher_scores, student_scores)
    ```

    Reference:
        Wang et al., "MiniLM: Deep Self-Attention Distillation for
        Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS 2020
        (eq. 2). https://arxiv.org/abs/2002.10957
    """
    teacher, student, valid = _tensors(teacher, student, valid)
    divergence = teacher * (
        ops.log(ops.maximum(teacher, _EPSILON))
        - ops.log(ops.maximum(student, _EPSILON))
    )
    rows = ops.mean(ops.sum(divergence, axis=-1), axis=1)  # (batch, queries)
    return masking.masked_mean(rows, valid, position_weight)


ATTENTION_LOSSES = {"mse": attention_mse, "kl": attention_kl}


@keras.saving.register_keras_serializable(package="kerasdistill")
class AttentionDistillation(masking.PositionWeightedLoss):
    """Distills a teacher attention layer's attention into a student's.

    Both layers are tapped with `return_attention_scores=True` in the
    networks' single forward pass (their names are stored as
    `"layer:attention_scores"` taps). `loss="kl"` is MiniLM's
    self-attention distribution transfer, `loss="mse"` TinyBERT's
    attention loss (on the probabilities: see
    `kerasdistill.transformers.attention_mse`). Teacher and student need
    the same number of heads, or `average_heads=True`, which compares the
    heads' mean distributions. `mask` names the input that holds the padding
    mask (`"padding_mask"` for keras-hub models): padded queries do not
    count. MiniLM's value relation needs each head's values, which no Keras
    or keras-hub attention layer returns: it is refused.

    Args:
        teacher_layer_name: The teacher's attention layer (a name or a path
            such as `"bert_backbone/transformer_layer_3"`).
        student_layer_name: The student's attention layer.
        loss: `"kl"` (default, MiniLM) or `"mse"` (TinyBERT).
        average_heads: Whether to compare the mean over heads. Defaults to
            False (the heads are compared one to one).
        mask: `None` (default), or the name (index) of the input holding
            the padding mask.
        name: Optional name.

    Example:

    ```python
    attention = kerasdistill.AttentionDistillation(
        "teacher_backbone/transformer_layer_3",
        "student_backbone/transformer_layer_1",
        loss="kl", mask="padding_mask",
    )
    distiller = kerasdistill.Distiller(teacher, student, attention)
    ```

    Reference:
        Wang et al., "MiniLM: Deep Self-Attention Distillation for
        Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS
        2020. https://arxiv.org/abs/2002.10957; Jiao et al., "TinyBERT:
        Distilling BERT for Natural Language Understanding", Findings of
        EMNLP 2020. https://arxiv.org/abs/1909.10351
    """

    def __init__(
        self,
        teacher_layer_name,
        student_layer_name,
        loss="kl",
        average_heads=False,
        mask=None,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if loss == "value_relation":
            raise ValueError(
                "AttentionDistillation: MiniLM's value relation needs each "
                "head's values, which keras.layers.MultiHeadAttention and "
                "keras-hub's transformer layers do not return (they return "
                "the attention probabilities alone). Received: "
                "loss='value_relation'. Use loss='kl' (MiniLM's attention "
                "distributions) or 'mse' (TinyBERT)."
            )
        if loss not in ATTENTION_LOSSES:
            raise ValueError(
                f"Expected `loss` to be one of {sorted(ATTENTION_LOSSES)}. "
                f"Received: loss={loss!r}"
            )
        if not isinstance(average_heads, bool):
            raise TypeError(
                "Expected `average_heads` to be True or False. Received: "
                f"average_heads={average_heads!r}"
            )
        masking.check_mask_key(mask, type(self).__name__)
        self.teacher_layer_name = taps.attention_tap(teacher_layer_name)
        self.student_layer_name = taps.attention_tap(student_layer_name)
        self.loss = loss
        self.average_heads = average_heads
        self.mask = mask

    def call(self, teacher_outputs, student_outputs, inputs=None):
        return self._values(teacher_outputs, student_outputs, inputs)

    def _values(self, teacher, student, inputs, position_weight=None, training=None):
        for scores, role in ((teacher, "teacher"), (student, "student")):
            if len(scores.shape) != 4:
                raise ValueError(
                    f"{type(self).__name__}: expected attention of shape "
                    "(batch, heads, queries, keys) from the "
                    f"{role}'s '{getattr(self, f'{role}_layer_name')}'. "
                    f"Received shape {tuple(scores.shape)}."
                )
        if self.average_heads:
            teacher = ops.mean(teacher, axis=1, keepdims=True)
            student = ops.mean(student, axis=1, keepdims=True)
        valid = None
        if self.mask is not None:
            valid = masking.padding_mask(inputs, self.mask, type(self).__name__)
        return ATTENTION_LOSSES[self.loss](teacher, student, valid, position_weight)

    def validate_model_compatibility(self, teacher, student):
        name = type(self).__name__
        specs = {}
        for model, role in ((teacher, "teacher"), (student, "student")):
            masking.check_model_has_mask(model, self.mask, role, name)
            specs[role] = taps.feature_spec(
                model, getattr(self, f"{role}_layer_name"), role
            )
        if any(spec is None for spec in specs.values()):
            return  # a subclassed model that was never built: checked in the step
        heads = {role: spec.shape[1] for role, spec in specs.items()}
        if (
            not self.average_heads
            and None not in heads.values()
            and (heads["teacher"] != heads["student"])
        ):
            raise ValueError(
                f"{name}: expected the teacher's and the student's attention "
                "layers to have as many heads, to compare them one to one. "
                f"Received {heads['teacher']} heads in "
                f"'{self.teacher_layer_name}' and {heads['student']} in "
                f"'{self.student_layer_name}'. Pass average_heads=True to "
                "compare the heads' mean attention."
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name,
                "loss": self.loss,
                "average_heads": self.average_heads,
                "mask": self.mask,
            }
        )
        return config


def _tensors(teacher, student, valid):
    """float32 tensors; `valid` all ones when there is no mask."""
    teacher = ops.convert_to_tensor(teacher, dtype="float32")
    student = ops.convert_to_tensor(student, dtype="float32")
    if valid is None:
        return teacher, student, ops.ones_like(teacher[:, 0, :, 0])
    return teacher, student, ops.convert_to_tensor(valid, dtype="float32")
