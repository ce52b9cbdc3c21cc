"""`CausalLMDistiller`: language-model distillation as it is done now, in
`fit()`: on-policy steps (GKD) where the student continues the prompts
itself, and a training step that never holds the full logits.

A training step, in the `Distiller`'s order (see `kerasdistill.distiller`):

1. inputs: a causal-LM batch with the prompts' padding mask
   (`kerasdistill.transformers.on_policy`);
2. view: with probability `lmbda` (a draw against a variable, decided
   inside the compiled step with `ops.cond`), the student's own
   continuations of the prompts, generated with its current weights; else
   the batch's sequences;
3. taps: the student runs once on the view: its logits, or with
   `chunk_size` its final hidden states; `compute_loss` runs the teacher
   on the same view;
4. losses: the divergences on the generated tokens (on-policy) or on the
   completion's tokens (the labels' weights, off-policy), and the
   student's cross-entropy on the labels, off-policy only (generated
   continuations have no labels: no sample of an on-policy step is
   labeled); with `chunk_size`, all of them from the hidden states over
   chunks of positions (`kerasdistill.losses.chunked_token_losses`);
5. weighted sum: as the `Distiller`'s, `alpha * student_loss + (1 - alpha)
   * distillation_loss`, with the student loss over the labeled samples
   (0 on an on-policy step, as for a batch of `kerasdistill.partial_labels`
   without any label).
"""

import inspect

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill import distiller as distiller_module
from kerasdistill import reduction
from kerasdistill import variables
from kerasdistill.data import cache
from kerasdistill.labels import split as split_labels
from kerasdistill.losses import chunked
from kerasdistill.losses import logits as logits_losses
from kerasdistill.student_pass import StudentPass
from kerasdistill.transformers import on_policy

_NAME = "CausalLMDistiller"


@keras.saving.register_keras_serializable(package="kerasdistill")
class CausalLMDistiller(distiller_module.Distiller):
    """Distils a keras-hub causal LM, on-policy (GKD) and off-policy, with
    a training step whose memory can stay flat in the vocabulary.

    At each training step, with probability `lmbda`, the student continues
    the batch's prompts (`prompt_mask`) itself, with its weights as they
    are at that step (keras-hub's `generate_step` traced into the step, a
    keras-hub `sampler`), and the teacher scores those continuations: the
    distillation losses compare the two on the generated tokens only
    (on-policy). The other steps use the batch's sequences: the losses on
    the completion's tokens (the labels' weights), plus the student's loss
    on the labels weighted by `alpha` (off-policy). GKD (Agarwal et al.
    2024) is `LogitsDistillation(loss="generalized_jsd", beta=...)` with
    `lmbda`; `lmbda=0` is token-level KD and `lmbda=1` fully on-policy.
    Sequence-level KD: fit on `kerasdistill.generate_transfer_set(teacher,
    prompts, prompt_mask=True)`, whose sequences are the teacher's
    (TRL's `seq_kd`). An on-policy step has no labels: its objective is
    `(1 - alpha)` times the distillation term.

    With `chunk_size`, the networks run their backbones (final hidden
    states) in the training step, and the losses are computed from them
    over chunks of positions, each projected to logits and made again in
    the backward pass (`kerasdistill.losses.chunked_token_losses`): no
    `(batch, positions, vocabulary)` tensor exists in the step, and the
    loss and gradients are those of the full logits. `evaluate()` and
    `predict()` use the full logits.

    The training batches are `(x, y, sample_weight)`, `x = {"token_ids",
    "padding_mask", "prompt_mask"}` (`kerasdistill.transformers.
    prompt_completion_data` makes them), `y` the next tokens,
    `sample_weight` `(batch, positions)`, 1 on the completion's tokens.
    The generated continuations fill the positions after each prompt (up
    to `max_new_tokens`): pad the batches to the longest prompt plus the
    continuation's length. `lmbda`, `alpha`, the loss weights and
    temperatures are variables read inside the compiled step; the draw
    uses the Distiller's `seed_generator`, and a random sampler's seed
    state is the Distiller's too, so under JAX both advance with the
    step's state. Runs on JAX, TensorFlow and PyTorch.

    Args:
        teacher: A `keras_hub.models.CausalLM`.
        student: A `keras_hub.models.CausalLM` of the same vocabulary.
        distillation_losses: A loss or a list of them on the logits,
            e.g. `kerasdistill.LogitsDistillation(1.0,
            loss="generalized_jsd", beta=0.5, mask="padding_mask")`.
        distillation_loss_weights: One weight >= 0 per loss.
        student_loss_weight: `alpha`, in [0, 1]. Defaults to 0.5.
        lmbda: The share of on-policy steps, in [0, 1]. Defaults to 0.5
            (TRL's default).
        max_new_tokens: At most this many tokens generated after each
            prompt; `None` (default) fills the batch's positions.
        sampler: A keras-hub sampler name (`"greedy"`, `"top_k"`,
            `"top_p"`, `"random"`, ...) or `keras_hub.samplers.Sampler`
            (copied). Defaults to `"greedy"`.
        sampling_temperature: The sampler's temperature (a number > 0), or
            `None` for the sampler's own (1.0 for a name).
        stop_token_ids: Token ids that end a continuation (its later
            positions are padding), or `None`.
        chunk_size: `None` (the full logits), or the positions per chunk
            of a step computed from the hidden states.
        seed: Seed of the on-policy draws and of a random sampler.
        name: The model's name.
        **kwargs: Passed to `keras.Model`.

    Example:

    ```python
    distiller = kerasdistill.CausalLMDistiller(
        teacher_lm, student_lm,
        kerasdistill.LogitsDistillation(
            1.0, loss="generalized_jsd", beta=0.5, mask="padding_mask"
        ),
        lmbda=0.5, max_new_tokens=16, chunk_size=128,
    )
    distiller.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y, weights = kerasdistill.transformers.prompt_completion_data(
        token_ids, prompt_mask, padding_mask
    )
    distiller.fit(x, y, sample_weight=weights, batch_size=32, epochs=3)
    ```

    Reference:
        Agarwal et al., "On-Policy Distillation of Language Models:
        Learning from Self-Generated Mistakes" (GKD), ICLR 2024.
        https://arxiv.org/abs/2306.13649; the chunked step: Wijmans et
        al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR
        2025. https://arxiv.org/abs/2411.09009
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        lmbda=0.5,
        max_new_tokens=None,
        sampler="greedy",
        sampling_temperature=None,
        stop_token_ids=None,
        chunk_size=None,
        seed=None,
        name="causal_lm_distiller",
        **kwargs,
    ):
        _check_causal_lms(teacher, student)
        for key in ("augmentation", "mixing"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"{_NAME}: expected no `{key}`: the view of a step is the "
                    "batch or the student's own continuations. Received "
                    f"{key}={kwargs[key]!r}. Leave it out."
                )
        checks.check_unit_interval(lmbda, "lmbda")
        if max_new_tokens is not None:
            checks.check_positive_int(max_new_tokens, "max_new_tokens")
        if chunk_size is not None:
            checks.check_positive_int(chunk_size, "chunk_size")
        super().__init__(
            teacher,
            student,
            distillation_losses,
            distillation_loss_weights=distillation_loss_weights,
            student_loss_weight=student_loss_weight,
            name=name,
            **kwargs,
        )
        if chunk_size is not None:
            _check_chunkable(self.distillation_losses, teacher, student)
        self._lmbda = variables.non_trainable("lmbda", lmbda)
        self.max_new_tokens = max_new_tokens
        self.sampler = on_policy.resolve_sampler(sampler, sampling_temperature, seed)
        # The sampler's seed state, tracked here: under JAX it is then part
        # of the train step's state (the sampler itself is not a layer).
        self._sampler_state = self.sampler.variables
        self.sampling_temperature = sampling_temperature
        self.stop_token_ids = None if stop_token_ids is None else tuple(stop_token_ids)
        self.chunk_size = chunk_size
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._projections = tuple(
            _projection(model) for model in (teacher, student)
        )  # functions, so the models' weights are not tracked twice
        self._position_values = None  # the compiled loss's reduction (compile)
        self.on_policy_tracker = keras.metrics.Mean(name="on_policy")

    @property
    def lmbda(self):
        """The share of on-policy steps, a variable; assign a number in
        [0, 1] to change it (no retrace)."""
        return self._lmbda

    @lmbda.setter
    def lmbda(self, value):
        checks.check_unit_interval(value, "lmbda")
        self._lmbda.assign(float(value))

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """`kerasdistill.Distiller.compile`. With `chunk_size`, the student
        loss is computed from the hidden states too: `loss` must be `None`
        or `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`,
        and compiled metrics, which would need the logits, are refused.

        Example:

        ```python
        distiller.compile(
            "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        ```
        """
        if self.chunk_size is not None:
            self._position_values = _chunked_student_loss(loss, metrics, kwargs)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def fit(self, *args, **kwargs):
        """`kerasdistill.Distiller.fit`, after checking that the training
        data holds the prompts' padding mask (arrays: that each prompt is
        a left-aligned prefix leaving positions to generate) and
        per-position sample weights."""
        arguments = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        x = arguments.arguments.get("x")
        if cache.is_cached(x):
            raise ValueError(_CACHED_MESSAGE)
        on_policy.check_data(x, arguments.arguments.get("sample_weight"), _NAME)
        return super().fit(*args, **kwargs)

    def call(self, inputs, training=None):
        """The student's logits; in a training step, its `StudentPass` on
        the step's view (the batch, or the student's continuations), with
        `mixing` `{"on_policy": bool, "weights": (batch, positions)}`."""
        inputs, cached = cache.split(inputs)
        if cached is not None:
            raise ValueError(_CACHED_MESSAGE)
        inputs, prompt_mask = on_policy.split_prompt_mask(inputs)
        if not training:
            return self.student(inputs, training=training)
        on_policy.check_batch(inputs, prompt_mask, _NAME)
        view, transformation = self._policy_view(inputs, prompt_mask)
        if self.chunk_size is None:
            outputs, features = self._networks["student"](view, training=True)
        else:
            outputs, features = self.student.backbone(view, training=True), {}
        return StudentPass(outputs, features, view, transformation)

    def _policy_view(self, inputs, prompt_mask):
        """`(view, transformation)`: the student's continuations with
        probability `lmbda`, else the batch, chosen inside the step."""
        on = keras.random.uniform((), seed=self.seed_generator) < self._lmbda
        seeds = self.sampler.variables

        def generated():
            token_ids, padding_mask, weights, new_seeds = on_policy.generate(
                self.student,
                self.sampler,
                inputs,
                prompt_mask,
                self.max_new_tokens,
                self.stop_token_ids,
            )
            return token_ids, padding_mask, weights, *new_seeds

        def batch():
            token_ids = inputs["token_ids"]
            weights = ops.zeros(ops.shape(token_ids), dtype="float32")
            padding_mask = inputs["padding_mask"]
            return token_ids, padding_mask, weights, *(v.value for v in seeds)

        token_ids, padding_mask, weights, *new_seeds = ops.cond(on, generated, batch)
        for variable, value in zip(seeds, new_seeds):
            variable.assign(value)
        view = {"token_ids": token_ids, "padding_mask": padding_mask}
        return view, {"on_policy": on, "weights": weights}

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """`kerasdistill.Distiller.compute_loss` on the step's view, with
        the prompts' mask left out of the inputs.

        Example:

        ```python
        loss = distiller.compute_loss(x, y, distiller(x, training=True))
        ```
        """
        inputs, cached = cache.split(x)
        inputs, _ = on_policy.split_prompt_mask(inputs)
        total = super().compute_loss(inputs, y, y_pred, sample_weight, training)
        if isinstance(y_pred, StudentPass) and y_pred.mixing is not None:
            self.on_policy_tracker.update_state(
                ops.cast(y_pred.mixing["on_policy"], "float32")
            )
        return total

    def _step_logs(self, training, labeled):
        """The `Distiller`'s, and in training `on_policy`: the share of
        on-policy steps."""
        return {
            **super()._step_logs(training, labeled),
            self.on_policy_tracker.name: training,
        }

    def _labels(self, y, sample_weight, step):
        """The labels as the step's view has them: on an on-policy step no
        sample is labeled, and the losses count the generated tokens."""
        y, has_label, sample_weight = split_labels(y, sample_weight)
        if step is None or step.mixing is None:
            return y, has_label, sample_weight
        generated = step.mixing["weights"]
        on = step.mixing["on_policy"]
        if sample_weight is None:
            sample_weight = ops.ones_like(generated)
        elif len(sample_weight.shape) != 2:
            raise ValueError(
                f"{_NAME}: expected sample_weight of shape (batch, positions) "
                "(1 on the completion's tokens). Received shape "
                f"{tuple(sample_weight.shape)}. Pass per-position weights."
            )
        sample_weight = ops.where(on, generated, ops.cast(sample_weight, "float32"))
        if y is not None:
            labeled = ops.ones((ops.shape(generated)[0],)) * (
                1.0 - ops.cast(on, "float32")
            )
            has_label = labeled if has_label is None else has_label * labeled
        return y, has_label, sample_weight

    def _step_losses(self, step, y, has_label, sample_weight, cached, training):
        """The `Distiller`'s losses, or with `chunk_size` on a training
        step, all of them from the hidden states over chunks of positions."""
        if self.chunk_size is None or step.mixing is None:
            return super()._step_losses(
                step, y, has_label, sample_weight, cached, training
            )
        teacher_hidden = ops.stop_gradient(
            self.teacher.backbone(step.view, training=False)
        )
        labels = y if y is not None and self.loss is not None else None
        values, cross_entropy = chunked.chunked_token_losses(
            teacher_hidden,
            step.outputs,
            *self._projections,
            divergences=[
                (loss.loss, loss.temperature, loss.beta, loss.skew)
                for loss in self.distillation_losses
            ],
            labels=labels,
            chunk_size=self.chunk_size,
        )
        terms = [
            weight * loss.reduce_token_values(value, step.view, sample_weight)
            for loss, weight, value in zip(
                self.distillation_losses, self._distillation_loss_weights, values
            )
        ]
        if y is None:
            return None, None, terms
        batch = reduction.batch_size(step.outputs)
        if labels is None:
            return ops.zeros((), dtype="float32"), batch, terms
        weights = sample_weight
        if has_label is not None:
            weights = weights * ops.expand_dims(has_label, -1)
        batch_mean = ops.cast(
            self._position_values(y, cross_entropy, weights), "float32"
        )
        if has_label is None:
            return batch_mean, batch, terms
        return (*reduction.mean_over_labeled(batch_mean, batch, has_label), terms)

    def get_config(self):
        config = super().get_config()
        for key in ("teacher_weights", "teacher_combination", "augmentation", "mixing"):
            config.pop(key)
        config.update(
            {
                "lmbda": variables.read(self._lmbda),
                "max_new_tokens": self.max_new_tokens,
                "sampler": keras.saving.serialize_keras_object(self.sampler),
                "sampling_temperature": self.sampling_temperature,
                "stop_token_ids": self.stop_token_ids,
                "chunk_size": self.chunk_size,
                "seed": self.seed,
            }
        )
        return config


_CACHED_MESSAGE = (
    f"{_NAME}: expected inputs, not cached teacher outputs: the teacher "
    "scores the student's own continuations, generated at each step, which "
    "a cache cannot hold. Fit on the batches themselves."
)


def _check_causal_lms(teacher, student):
    """Refuses a teacher or student that is not a keras-hub `CausalLM`,
    and vocabularies that differ."""
    keras_hub = on_policy.keras_hub_module()
    for model, role in ((teacher, "teacher"), (student, "student")):
        if not isinstance(model, keras_hub.models.CausalLM):
            raise TypeError(
                f"{_NAME}: expected the {role} to be a keras-hub causal LM "
                "(keras_hub.models.CausalLM, e.g. GPT2CausalLM or "
                f"GemmaCausalLM), which generates and scores tokens. Received: "
                f"{type(model).__name__}. Wrap the backbone in its CausalLM "
                "task (preprocessor=None), or use kerasdistill.Distiller for "
                "other models."
            )
    sizes = [model.backbone.token_embedding.input_dim for model in (teacher, student)]
    if sizes[0] != sizes[1]:
        raise ValueError(
            f"{_NAME}: expected the teacher and the student to share one "
            "vocabulary, token by token: the teacher scores the student's "
            f"tokens. Received vocabularies of {sizes[0]} (teacher) and "
            f"{sizes[1]} (student) tokens. Give the student the teacher's "
            "tokenizer and vocabulary size."
        )


def _check_chunkable(losses, teacher, student):
    """With `chunk_size`: losses that the hidden states can give, models
    whose logits are their token embedding's reverse projection."""
    for loss in losses:
        problem = None
        if not isinstance(loss, logits_losses.LogitsDistillation):
            problem = f"a {type(loss).__name__}"
        elif not isinstance(loss.loss, str):
            problem = f"loss={loss.loss!r} (one per output)"
        elif loss.top_k is not None or loss.logit_standardization:
            problem = "top_k or logit_standardization"
        elif not loss.from_logits:
            problem = "from_logits=False"
        if problem is not None:
            raise ValueError(
                f"{_NAME}: chunk_size computes the losses from the hidden "
                "states and needs kerasdistill.LogitsDistillation losses on "
                "the full vocabulary (one divergence name, from_logits=True, "
                f"no top_k or logit_standardization). Received {problem}. "
                "Pass chunk_size=None, or change the loss."
            )
    for model, role in ((teacher, "teacher"), (student, "student")):
        embedding = model.backbone.token_embedding
        if not isinstance(embedding, keras.layers.ReversibleEmbedding):
            raise ValueError(
                f"{_NAME}: chunk_size projects the hidden states with the "
                "backbone's token embedding (reverse=True). Received a "
                f"{role} whose token_embedding is a "
                f"{type(embedding).__name__}. Pass chunk_size=None."
            )


def _projection(model):
    embedding = model.backbone.token_embedding

    def project(hidden):
        return embedding(hidden, reverse=True)

    return project


class _PositionValues(keras.losses.Loss):
    """A loss whose predictions are its per-position values: Keras's
    reduction of the compiled loss, on values computed from the hidden
    states."""

    def call(self, y_true, y_pred):
        return y_pred


def _chunked_student_loss(loss, metrics, kwargs):
    """The `_PositionValues` that reduces the chunked cross-entropy as the
    compiled `loss` reduces its own (`None` without a loss)."""
    fix = "Pass chunk_size=None to train on the full logits."
    if metrics or kwargs.get("weighted_metrics"):
        raise ValueError(
            f"{_NAME}: compiled metrics need the student's logits, which a "
            "step with chunk_size never builds. Received metrics="
            f"{metrics!r}, weighted_metrics={kwargs.get('weighted_metrics')!r}."
            f" Leave them out (History logs the losses), or {fix[0].lower()}"
            f"{fix[1:]}"
        )
    if loss is None:
        return None
    if (
        not isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
        or not loss.from_logits
        or loss.ignore_class is not None
        or kwargs.get("loss_weights") is not None
    ):
        raise ValueError(
            f"{_NAME}: with chunk_size, the student's loss is its "
            "cross-entropy on the next tokens, computed from the hidden "
            "states: expected loss=keras.losses.SparseCategoricalCrossentropy"
            f"(from_logits=True) (no ignore_class, no loss_weights). Received: "
            f"loss={loss!r}. Pass that loss, or None. {fix}"
        )
    return _PositionValues(
        name="position_values", reduction=loss.reduction, dtype=loss.dtype
    )
