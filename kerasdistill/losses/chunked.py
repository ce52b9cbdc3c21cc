"""Token-level distillation whose memory does not grow with the vocabulary:
the logits are made from the final hidden states a chunk of positions at
a time, and remade in the backward pass.

A causal LM's logits are `(batch, positions, vocabulary)`: with Gemma 3's
262,144 tokens, a batch of 2 x 1,024 positions is 2 GiB in float32 for
each network, and a training step holds several such tensors (the logits,
their log-softmax, their gradient). Here the teacher's and the student's
hidden states are projected to logits (keras-hub's `ReversibleEmbedding`
called with `reverse=True`, its logit soft-cap included) for
`chunk_size` positions at a time; each chunk's divergence is reduced to
one number per sample at once, under `keras.remat`, so the backward pass
projects the chunk again instead of keeping its logits. At most one
chunk's logits exist at a time: the memory grows with `chunk_size x
vocabulary`, not with `positions x vocabulary`.

This needs only the hidden states, a function that projects a chunk of
them to logits, and the padding mask: `chunked_token_divergence` is that
function; `ChunkedTokenDistillation` is the same loss in the distillation
loss protocol, tapping the hidden states and finding the projections in
the models.
"""

import math

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill import taps
from kerasdistill.losses import base
from kerasdistill.losses import divergences as divergence_module
from kerasdistill.losses import masking


def chunked_token_divergence(
    teacher_hidden,
    student_hidden,
    teacher_projection,
    student_projection,
    mask=None,
    loss="kl_divergence",
    temperature=1.0,
    beta=None,
    skew=None,
    chunk_size=128,
):
    """Token distillation from hidden states, `chunk_size` positions at a time.

    Equal to `kerasdistill.LogitsDistillation(temperature, loss=loss,
    beta=beta, skew=skew)` on the logits `teacher_projection(teacher_hidden)`
    and `student_projection(student_hidden)` with the padding `mask` (the
    per-sample shares of the mean over the batch's unpadded positions, see
    `kerasdistill.losses.masking`), without ever holding those logits
    whole: each chunk of positions is projected, compared and reduced
    under `keras.remat`, so its logits are made again in the backward pass
    rather than kept. The teacher's side gets no gradient.

    Args:
        teacher_hidden: The teacher's final hidden states, `(batch,
            positions, teacher_width)`.
        student_hidden: The student's, `(batch, positions, student_width)`.
            `positions` must be known when the step is traced.
        teacher_projection: A function from a chunk of teacher hidden
            states `(batch, chunk, teacher_width)` to its logits `(batch,
            chunk, vocabulary)`, e.g. `lambda h:
            teacher.backbone.token_embedding(h, reverse=True)` for a
            keras-hub causal LM (which applies Gemma's logit soft-cap too).
        student_projection: The student's, to the same vocabulary.
        mask: Optional `(batch, positions)` padding mask (1 or `True` for a
            token), or per-position weights whose zeros are padding.
        loss: A divergence of `kerasdistill.losses.divergences`:
            `"kl_divergence"` (default), `"reverse_kl"`,
            `"generalized_jsd"`, `"skew_kl"`, `"skew_reverse_kl"` or
            `"tvd"`.
        temperature: Softmax temperature `T > 0` (a number or a variable);
            the divergence is multiplied by `T^2`.
        beta: `"generalized_jsd"`'s beta in [0, 1] (default 0.5).
        skew: The skew divergences' skew in [0, 1] (default 0.1).
        chunk_size: Positions per chunk, an int >= 1. The positions are
            padded to a multiple of it (the padding does not count). The
            peak memory grows with `chunk_size x vocabulary`.

    Returns:
        A float32 tensor of shape `(batch,)`, whose mean is the loss.

    Example:

    ```python
    embedding = keras.layers.ReversibleEmbedding(1000, 16, logit_soft_cap=30.0)
    embedding.build((None,))
    teacher_hidden = keras.random.normal((2, 64, 16), seed=0)
    student_hidden = keras.random.normal((2, 64, 16), seed=1)
    project = lambda h: embedding(h, reverse=True)
    loss = kerasdistill.losses.chunked_token_divergence(
        teacher_hidden, student_hidden, project, project,
        loss="reverse_kl", chunk_size=16,
    )  # shape (2,)
    ```

    Reference:
        The divergences' papers: see `kerasdistill.losses.divergences`.
        Chunked losses over the vocabulary projection with recomputation in
        the backward pass: Wijmans et al., "Cut Your Losses in
        Large-Vocabulary Language Models", ICLR 2025.
        https://arxiv.org/abs/2411.09009
    """
    name = "chunked_token_divergence"
    if loss not in divergence_module.NAMES:
        raise ValueError(
            f"{name}: expected `loss` to be one of {list(divergence_module.NAMES)}. "
            f"Received: loss={loss!r}"
        )
    beta, skew = divergence_module.resolve_options([loss], beta, skew, name)
    _positions(teacher_hidden, student_hidden, mask, name)
    (values,), _ = chunked_token_losses(
        teacher_hidden,
        student_hidden,
        teacher_projection,
        student_projection,
        divergences=[(loss, temperature, beta, skew)],
        chunk_size=chunk_size,
    )
    if mask is None:
        weight = ops.ones(ops.shape(values), dtype="float32")
    else:
        weight = ops.cast(mask, "float32")
    return masking.position_mean(values, ops.ones_like(weight), weight)


def chunked_token_losses(
    teacher_hidden,
    student_hidden,
    teacher_projection,
    student_projection,
    divergences=(),
    labels=None,
    chunk_size=128,
):
    """Per-position token losses from hidden states, `chunk_size` positions
    at a time: divergences from the teacher and the student's cross-entropy
    on its labels, with one projection of each chunk for all of them.

    Each chunk of positions is projected to logits (`teacher_projection`,
    `student_projection`), compared and reduced to one value per position
    under `keras.remat`, so its logits are made again in the backward pass
    rather than kept: the memory grows with `chunk_size x vocabulary`, not
    with `positions x vocabulary`. The teacher's side gets no gradient.
    Reduce the values as the full-logits loss would (e.g.
    `kerasdistill.LogitsDistillation.reduce_token_values`).

    Args:
        teacher_hidden: The teacher's final hidden states, `(batch,
            positions, teacher_width)`, or `None` without `divergences`.
        student_hidden: The student's, `(batch, positions, student_width)`;
            `positions` must be known when the step is traced.
        teacher_projection: A function from a chunk of teacher hidden
            states to its logits `(batch, chunk, vocabulary)`.
        student_projection: The student's, to the same vocabulary.
        divergences: `(loss, temperature, beta, skew)` for each divergence
            to compute: `loss` a name of `kerasdistill.losses.divergences`
            or `"soft_cross_entropy"`, `temperature` a number or variable
            (the value is multiplied by its square), `beta` / `skew` the
            loss's option or `None`.
        labels: Optional `(batch, positions)` integer labels: the student's
            cross-entropy `-log softmax(student_logits)[label]` (at
            temperature 1) is computed too.
        chunk_size: Positions per chunk, an int >= 1. The positions are
            padded to a multiple of it (the padding is dropped).

    Returns:
        `(values, cross_entropy)`: a list of float32 `(batch, positions)`
        tensors, one per divergence, and the `(batch, positions)`
        cross-entropy (`None` without `labels`).

    Example:

    ```python
    embedding = keras.layers.ReversibleEmbedding(1000, 16)
    embedding.build((None,))
    hidden = keras.random.normal((2, 64, 16), seed=0)
    project = lambda h: embedding(h, reverse=True)
    (reverse_kl,), cross_entropy = kerasdistill.losses.chunked_token_losses(
        hidden, hidden * 0.5, project, project,
        divergences=[("reverse_kl", 1.0, None, None)],
        labels=keras.ops.zeros((2, 64), "int32"), chunk_size=16,
    )  # two (2, 64) tensors
    ```

    Reference:
        Wijmans et al., "Cut Your Losses in Large-Vocabulary Language
        Models", ICLR 2025. https://arxiv.org/abs/2411.09009
    """
    name = "chunked_token_losses"
    checks.check_positive_int(chunk_size, "chunk_size")
    divergences_ = [tuple(spec) for spec in divergences]
    for loss, _, _, _ in divergences_:
        checks.check_choice(
            loss, (*divergence_module.NAMES, "soft_cross_entropy"), "loss"
        )
    if not divergences_ and labels is None:
        raise ValueError(
            f"{name}: expected at least one divergence or labels. Received "
            "divergences=() and labels=None."
        )
    if not divergences_:
        teacher_hidden = student_hidden  # only its shape is read
    positions = _positions(teacher_hidden, student_hidden, labels, name)
    count = math.ceil(positions / chunk_size)
    padding = count * chunk_size - positions
    teacher_hidden = ops.stop_gradient(ops.convert_to_tensor(teacher_hidden))
    student_hidden = ops.convert_to_tensor(student_hidden)
    # Float labels: TensorFlow's recomputation differentiates every input.
    labels_ = ops.zeros(ops.shape(student_hidden)[:2], dtype="float32")
    if labels is not None:
        labels_ = ops.cast(labels, "float32")
    if padding:
        teacher_hidden, student_hidden = (
            ops.pad(h, [[0, 0], [0, padding], [0, 0]])
            for h in (teacher_hidden, student_hidden)
        )
        labels_ = ops.pad(labels_, [[0, 0], [0, padding]])

    def chunk_values(chunk):
        """One chunk's per-position values, `(outputs, batch, chunk)`."""
        teacher_chunk, student_chunk, label_chunk = chunk
        student_logits = ops.cast(student_projection(student_chunk), "float32")
        outputs = []
        if divergences_:
            teacher_logits = ops.stop_gradient(
                ops.cast(teacher_projection(teacher_chunk), "float32")
            )
        for loss, temperature, beta, skew in divergences_:
            log_p = ops.log_softmax(teacher_logits / temperature)
            log_q = ops.log_softmax(student_logits / temperature)
            if loss == "soft_cross_entropy":
                values = -ops.sum(ops.exp(log_p) * log_q, axis=-1)
            else:
                values = divergence_module.divergence(log_p, log_q, loss, beta, skew)
            outputs.append(values * ops.square(temperature))
        if labels is not None:
            log_q = ops.log_softmax(student_logits)
            index = ops.expand_dims(ops.cast(label_chunk, "int32"), -1)
            outputs.append(-ops.take_along_axis(log_q, index, axis=-1)[..., 0])
        return ops.stack(outputs)

    rematerialized = keras.remat(chunk_values)
    if keras.backend.backend() == "jax":
        # A loop (`lax.map`), not independent ops, which XLA would run side
        # by side, each chunk's logits alive at once.
        chunks = tuple(
            _split(x, count, chunk_size)
            for x in (teacher_hidden, student_hidden, labels_)
        )
        values = ops.map(rematerialized, chunks)  # (count, outputs, batch, chunk)
        values = ops.reshape(
            ops.transpose(values, (1, 2, 0, 3)), (*ops.shape(values)[1:3], -1)
        )
    else:
        # TensorFlow cannot recompute a gradient that reads variables inside
        # a while loop (`tf.map_fn`); PyTorch runs either form eagerly.
        values = ops.concatenate(
            [
                rematerialized(
                    tuple(
                        x[:, index * chunk_size : (index + 1) * chunk_size]
                        for x in (teacher_hidden, student_hidden, labels_)
                    )
                )
                for index in range(count)
            ],
            axis=-1,
        )
    values = values[:, :, :positions]
    outputs = [values[i] for i in range(len(divergences_))]
    return outputs, (values[-1] if labels is not None else None)


def _split(x, count, chunk_size):
    """`(batch, count * chunk_size, ...)` as `(count, batch, chunk_size, ...)`."""
    shape = ops.shape(x)
    x = ops.reshape(x, (shape[0], count, chunk_size, *shape[2:]))
    return ops.moveaxis(x, 1, 0)


def _positions(teacher_hidden, student_hidden, mask, name):
    """The static number of positions the hidden states (and the mask or
    labels, `(batch, positions)`) share."""
    shapes = [tuple(teacher_hidden.shape), tuple(student_hidden.shape)]
    if mask is not None:
        shapes.append(tuple(mask.shape) + (None,))
    if any(len(shape) != 3 for shape in shapes):
        raise ValueError(
            f"{name}: expected hidden states of shape (batch, positions, "
            "width) and a mask of shape (batch, positions). Received: "
            f"teacher {shapes[0]}, student {shapes[1]}"
            + (f", mask {tuple(mask.shape)}" if mask is not None else "")
            + "."
        )
    positions = {shape[1] for shape in shapes}
    if None in positions or len(positions) != 1:
        raise ValueError(
            f"{name}: expected the teacher's and the student's hidden states "
            "(and the mask) to have the same number of positions, known when "
            f"the step is traced. Received: teacher {shapes[0]}, student "
            f"{shapes[1]}"
            + (f", mask {tuple(mask.shape)}" if mask is not None else "")
            + ". Pad the batches to a fixed length (keras-hub's "
            "preprocessors' sequence_length)."
        )
    return positions.pop()


@keras.saving.register_keras_serializable(package="kerasdistill")
class ChunkedTokenDistillation(base.TemperedLoss):
    """Token-level distillation of a causal LM from its hidden states, over
    chunks of positions, so that no `(batch, positions, vocabulary)` logits
    tensor is needed (`kerasdistill.losses.chunked_token_divergence`).

    It taps the teacher's and the student's final hidden states
    (`teacher_layer_name` / `student_layer_name`; for a keras-hub causal LM
    the backbone, whose output they are) and finds, in each model, the
    layer that projects them to logits (`teacher_projection` /
    `student_projection`, called with `reverse=True`: keras-hub's
    `ReversibleEmbedding` `"token_embedding"`, with its logit soft-cap).
    The loss equals `kerasdistill.LogitsDistillation(temperature,
    loss=loss, mask=mask)` on the models' logits.

    In a `kerasdistill.Distiller`, each network's forward pass still
    computes its final logits; this loss itself never builds them whole.
    `kerasdistill.CausalLMDistiller(chunk_size=...)` trains without them.

    Args:
        teacher_layer_name: The teacher layer whose output is its final
            hidden states (a name or a path such as `"gemma_backbone"`).
        student_layer_name: The student's.
        teacher_projection: The name (or path) of the teacher layer that
            maps hidden states to logits when called with `reverse=True`.
            Defaults to `"token_embedding"` (keras-hub).
        student_projection: The student's. Defaults to `"token_embedding"`.
        loss: A divergence of `kerasdistill.losses.divergences`. Defaults
            to `"kl_divergence"`.
        temperature: Softmax temperature, a number > 0. Defaults to 1.0.
        beta: `"generalized_jsd"`'s beta in [0, 1] (default 0.5 with it).
        skew: The skew divergences' skew in [0, 1] (default 0.1 with them).
        mask: `None`, or the name (index) of the input holding the padding
            mask (`"padding_mask"` for keras-hub models).
        chunk_size: Positions per chunk. Defaults to 128.
        name: Optional name.

    Example:

    ```python
    loss = kerasdistill.losses.ChunkedTokenDistillation(
        "gemma_backbone", "gemma_backbone", loss="generalized_jsd",
        mask="padding_mask", chunk_size=256,
    )
    ```

    Reference:
        The divergences' papers: see `kerasdistill.losses.divergences`;
        Wijmans et al., "Cut Your Losses in Large-Vocabulary Language
        Models", ICLR 2025. https://arxiv.org/abs/2411.09009
    """

    def __init__(
        self,
        teacher_layer_name,
        student_layer_name,
        teacher_projection="token_embedding",
        student_projection="token_embedding",
        loss="kl_divergence",
        temperature=1.0,
        beta=None,
        skew=None,
        mask=None,
        chunk_size=128,
        name=None,
        **kwargs,
    ):
        super().__init__(temperature, name=name, **kwargs)
        checks.check_choice(loss, divergence_module.NAMES, "loss")
        checks.check_positive_int(chunk_size, "chunk_size")
        masking.check_mask_key(mask, type(self).__name__)
        for value, argument in (
            (teacher_layer_name, "teacher_layer_name"),
            (student_layer_name, "student_layer_name"),
            (teacher_projection, "teacher_projection"),
            (student_projection, "student_projection"),
        ):
            if not isinstance(value, str) or not value:
                raise TypeError(
                    f"{type(self).__name__}: expected `{argument}` to be a "
                    f"layer name or path. Received: {argument}={value!r}"
                )
        self.beta, self.skew = divergence_module.resolve_options(
            [loss], beta, skew, type(self).__name__
        )
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.teacher_projection = teacher_projection
        self.student_projection = student_projection
        self.loss = loss
        self.mask = mask
        self.chunk_size = chunk_size
        # The models' projection layers, found by `build_for`; held in a
        # tuple of functions so that the loss does not track (and save) the
        # models' weights.
        self._projections = None

    def call(self, teacher_outputs, student_outputs, inputs=None):
        if self._projections is None:
            raise ValueError(
                f"{type(self).__name__}: the projection layers are found in "
                "the models when the loss is prepared. Received a call "
                "before `prepare(teacher, student)`. Create a "
                "kerasdistill.Distiller with this loss, or call "
                "loss.prepare(teacher, student) first."
            )
        mask = None
        if self.mask is not None:
            mask = masking.padding_mask(inputs, self.mask, type(self).__name__)
        return chunked_token_divergence(
            teacher_outputs,
            student_outputs,
            *self._projections,
            mask=mask,
            loss=self.loss,
            temperature=self._temperature,
            beta=self.beta,
            skew=self.skew,
            chunk_size=self.chunk_size,
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        for outputs, role in (
            (teacher_outputs, "teacher"),
            (student_outputs, "student"),
        ):
            shape = getattr(outputs, "shape", None)
            if shape is None or len(shape) != 3:
                raise ValueError(
                    f"{type(self).__name__}: expected the {role}'s hidden "
                    "states (batch, positions, width) from "
                    f"'{getattr(self, f'{role}_layer_name')}'. Received: "
                    f"{getattr(outputs, 'shape', type(outputs).__name__)}. "
                    "Tap the layer that outputs the final hidden states (a "
                    "keras-hub backbone)."
                )

    def validate_model_compatibility(self, teacher, student):
        name = type(self).__name__
        for model, role in ((teacher, "teacher"), (student, "student")):
            masking.check_model_has_mask(model, self.mask, role, name)
            taps.find_layer(model, getattr(self, f"{role}_layer_name"), role)
            layer = taps.find_layer(model, getattr(self, f"{role}_projection"), role)
            if not isinstance(layer, keras.layers.ReversibleEmbedding):
                raise ValueError(
                    f"{name}: expected the {role}'s "
                    f"'{getattr(self, f'{role}_projection')}' to be a "
                    "keras.layers.ReversibleEmbedding (keras-hub's token "
                    "embedding), which projects hidden states to logits "
                    f"with reverse=True. Received a {type(layer).__name__}. "
                    "Name the model's output embedding, or call "
                    "kerasdistill.losses.chunked_token_divergence with your "
                    "own projections."
                )

    def build_for(self, teacher, student):
        layers = [
            taps.find_layer(teacher, self.teacher_projection, "teacher"),
            taps.find_layer(student, self.student_projection, "student"),
        ]
        self._projections = tuple(_reverse(layer) for layer in layers)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name,
                "teacher_projection": self.teacher_projection,
                "student_projection": self.student_projection,
                "loss": self.loss,
                "beta": self.beta,
                "skew": self.skew,
                "mask": self.mask,
                "chunk_size": self.chunk_size,
            }
        )
        return config


def _reverse(layer):
    def project(hidden):
        return layer(hidden, reverse=True)

    return project
