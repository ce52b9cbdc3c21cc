"""On-policy distillation inside `fit()` (GKD): the view of a training step
in which the student continues the batch's prompts itself, with its weights
as they are at that step.

A causal-LM batch for `kerasdistill.CausalLMDistiller` is a keras-hub
causal LM's training batch plus where each prompt ends: inputs
`{"token_ids", "padding_mask", "prompt_mask"}` (each `(batch, positions)`;
`prompt_mask` true on the prompt, a left-aligned prefix of each sequence),
next-token labels, and the labels' weights `(batch, positions)`, 1 on the
completion's tokens. `prompt_completion_data` makes such arrays from whole
sequences, and `kerasdistill.generate_transfer_set(...,
prompt_mask=True)` from a teacher's generations.

`generate` is the on-policy view: the student's keras-hub `generate_step`
(its KV cache and a keras-hub sampler) on the prompts, traced into the
training step. The student's variables are read where the step maps them
(under JAX, the jitted step's own arguments), behind `stop_gradient`
(`torch.no_grad` on PyTorch): the continuations are a function of the
current weights, never differentiated.
A random sampler's seed state is a variable of the `Distiller` (it tracks
the sampler's variables), so under JAX it is part of the step's state and
advances from step to step; its new value is returned for the step to
assign. TensorFlow and PyTorch run keras-hub's loop on the variables
themselves (without a gradient).
"""

import contextlib

import keras
import numpy as np
from keras import ops

from kerasdistill import _keras_internals
from kerasdistill import checks
from kerasdistill.data import input_batches

PROMPT_MASK = "prompt_mask"
MODEL_INPUTS = ("token_ids", "padding_mask")
BATCH_LAYOUT = (
    "a dict {'token_ids', 'padding_mask', 'prompt_mask'} of (batch, positions) "
    "arrays, prompt_mask true on each prompt (a left-aligned prefix); make "
    "them with kerasdistill.transformers.prompt_completion_data(token_ids, "
    "prompt_mask) or kerasdistill.generate_transfer_set(..., "
    "prompt_mask=True)"
)


def prompt_completion_data(token_ids, prompt_mask, padding_mask=None):
    """Training arrays of prompts and completions for a causal LM.

    From whole sequences (prompt then completion, then padding), the
    arrays a keras-hub causal LM trains on, plus where each prompt ends:
    `x = {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1],
    "prompt_mask": prompt[:, :-1]}`, `y = ids[:, 1:]` and
    `sample_weight = (mask & ~prompt)[:, 1:]`, 1 where the next token is
    a completion token. `kerasdistill.CausalLMDistiller` takes them (its
    on-policy steps continue the prompts); without `"prompt_mask"`, a
    keras-hub `CausalLM` or `kerasdistill.Distiller` does.

    Args:
        token_ids: `(n, length)` integer token ids.
        prompt_mask: `(n, length)`, true on each sequence's prompt, a
            left-aligned prefix of at least one token.
        padding_mask: Optional `(n, length)`, true on the sequence's tokens
            (prompt and completion); defaults to every position.

    Returns:
        `(x, y, sample_weight)` numpy arrays, of `length - 1` positions.

    Example:

    ```python
    ids = np.array([[1, 5, 6, 7, 8], [1, 9, 3, 4, 0]])
    prompt = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], bool)
    x, y, weights = kerasdistill.transformers.prompt_completion_data(
        ids, prompt, padding_mask=ids > 0
    )
    weights  # [[0, 1, 1, 1], [0, 0, 1, 0]]
    ```
    """
    token_ids = np.asarray(keras.ops.convert_to_numpy(token_ids))
    prompt_mask = np.asarray(keras.ops.convert_to_numpy(prompt_mask)).astype(bool)
    if padding_mask is None:
        padding_mask = np.ones_like(prompt_mask)
    padding_mask = np.asarray(keras.ops.convert_to_numpy(padding_mask)).astype(bool)
    if token_ids.ndim != 2 or not token_ids.shape == prompt_mask.shape == (
        padding_mask.shape
    ):
        raise ValueError(
            "Expected token_ids, prompt_mask and padding_mask of one shape "
            f"(n, length). Received: {token_ids.shape}, {prompt_mask.shape} "
            f"and {padding_mask.shape}."
        )
    check_prompts(prompt_mask, padding_mask, "prompt_completion_data")
    x = {
        "token_ids": token_ids[:, :-1],
        "padding_mask": padding_mask[:, :-1],
        PROMPT_MASK: prompt_mask[:, :-1],
    }
    weights = (padding_mask & ~prompt_mask)[:, 1:].astype("float32")
    return x, token_ids[:, 1:], weights


def check_prompts(prompt_mask, padding_mask, where):
    """Refuses prompts that are not a left-aligned prefix of at least one
    token of each sequence, leaving at least one position to generate."""
    lengths = prompt_mask.sum(axis=1)
    prefix = np.arange(prompt_mask.shape[1])[None] < lengths[:, None]
    problems = []
    if len(lengths) and lengths.min() < 1:
        problems.append(f"{int((lengths < 1).sum())} empty prompt(s)")
    if not (prompt_mask == prefix).all():
        problems.append("prompt_mask not a left-aligned prefix")
    if (prompt_mask & ~padding_mask).any():
        problems.append("prompt tokens outside padding_mask")
    if len(lengths) and lengths.max() >= prompt_mask.shape[1]:
        problems.append("a prompt that fills every position (nothing to generate)")
    if problems:
        raise ValueError(
            f"{where}: expected each prompt to be a left-aligned prefix of "
            "its sequence, of at least one token, leaving positions to "
            f"generate. Received: {'; '.join(problems)}. Pass {BATCH_LAYOUT}."
        )


def split_prompt_mask(inputs):
    """`(model inputs, prompt_mask)`: the batch's inputs without
    `"prompt_mask"` (what the causal LMs take) and the mask (`None` when
    absent)."""
    if not isinstance(inputs, dict) or PROMPT_MASK not in inputs:
        return inputs, None
    inputs = dict(inputs)
    return inputs, inputs.pop(PROMPT_MASK)


def check_batch(inputs, prompt_mask, where):
    """Refuses, when the step is traced, a batch without the prompts'
    padding mask or the inputs of a causal LM."""
    if not isinstance(inputs, dict) or not set(MODEL_INPUTS) <= set(inputs):
        received = sorted(inputs) if isinstance(inputs, dict) else type(inputs)
        raise ValueError(
            f"{where}: expected the inputs of a causal LM, {BATCH_LAYOUT}. "
            f"Received inputs: {received}."
        )
    if prompt_mask is None:
        raise ValueError(
            f"{where}: expected the prompts' padding mask under "
            f"'{PROMPT_MASK}' in the training batches, to know what the "
            "student continues on its on-policy steps. Received a batch "
            f"without it (inputs: {sorted(inputs)}). Pass {BATCH_LAYOUT}."
        )


def check_data(x, sample_weight, where):
    """Before `fit()`: the prompts' padding mask and the layout of arrays
    (values too) or of a `tf.data.Dataset`'s spec; per-position sample
    weights."""
    if input_batches.is_tf_dataset(x):
        x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(x.element_spec)
    elif not isinstance(x, dict):  # a generator or a PyDataset: in the step
        return
    inputs, prompt_mask = split_prompt_mask(x)
    check_batch(inputs, prompt_mask, where)
    if sample_weight is not None and len(sample_weight.shape) != 2:
        raise ValueError(
            f"{where}: expected sample_weight of shape (batch, positions), "
            "the labels' weights (1 on the completion's tokens), which an "
            "on-policy step replaces by the generated tokens' mask. Received "
            f"shape {tuple(sample_weight.shape)}. Pass per-position weights."
        )
    if all(isinstance(v, np.ndarray) for v in (prompt_mask, inputs["padding_mask"])):
        check_prompts(
            prompt_mask.astype(bool), inputs["padding_mask"].astype(bool), where
        )


def resolve_sampler(sampler, temperature=None, seed=None):
    """The `Distiller`'s own keras-hub sampler: made from a name or a
    config, or copied from an instance (through its config), with
    `temperature` and `seed` (for a random sampler) when given."""
    keras_hub = keras_hub_module()
    if isinstance(sampler, (str, dict)):
        sampler = keras_hub.samplers.get(sampler)
    elif not isinstance(sampler, keras_hub.samplers.Sampler):
        raise TypeError(
            "Expected `sampler` to be a keras-hub sampler name ('greedy', "
            "'top_k', 'top_p', 'random', 'beam', ...) or a "
            f"keras_hub.samplers.Sampler. Received: {sampler!r} of type "
            f"{type(sampler).__name__}."
        )
    config = sampler.get_config()
    if temperature is not None:
        checks.check_positive(temperature, "sampling_temperature")
        config["temperature"] = float(temperature)
    if seed is not None and "seed" in config:
        config["seed"] = seed
    return type(sampler).from_config(config)


def generate(student, sampler, inputs, prompt_mask, max_new_tokens, stop_token_ids):
    """The student's continuations of the batch's prompts, inside the step.

    Returns `(token_ids, padding_mask, weights, seeds)`: the prompts and
    their continuations (0 after a sequence's end), their padding mask (in
    the dtype of the batch's), the `(batch, positions)` float32 weights of
    the positions whose next token was generated (where an on-policy loss
    counts), and the sampler's new seed state.
    """
    token_ids = inputs["token_ids"]
    prompt = ops.cast(prompt_mask, "bool")
    prompts = {
        "token_ids": ops.where(prompt, token_ids, ops.zeros_like(token_ids)),
        "padding_mask": prompt,
    }
    with (
        _generation_state(student, sampler) as seeds,
        _keras_internals.inference_calls(),
        _using_sampler(student, sampler),
    ):
        generated = student.generate_step(prompts, stop_token_ids=stop_token_ids)
    seeds = seeds()
    new = ops.logical_and(
        ops.cast(generated["padding_mask"], "bool"), ops.logical_not(prompt)
    )
    if max_new_tokens is not None:
        lengths = ops.sum(ops.cast(prompt, "int32"), axis=1, keepdims=True)
        positions = ops.expand_dims(ops.arange(ops.shape(prompt)[1]), 0)
        new = ops.logical_and(new, positions < lengths + max_new_tokens)
    mask = ops.logical_or(prompt, new)
    token_ids = ops.where(mask, generated["token_ids"], ops.zeros_like(token_ids))
    # Position j's logits predict token j + 1: they count where it was made.
    new = ops.cast(new, "float32")
    weights = ops.concatenate([new[:, 1:], ops.zeros_like(new[:, :1])], axis=1)
    padding_mask = ops.cast(mask, inputs["padding_mask"].dtype)
    return token_ids, padding_mask, weights, seeds


@contextlib.contextmanager
def _generation_state(student, sampler):
    """Inside, the student's weights are read without a gradient; yields a
    function that returns the sampler's seed state after generating.

    JAX: the step's values of the variables (where the train step maps
    them) behind `stop_gradient` (reverse-mode differentiation refuses a
    while loop), and the sampler's seed in a scope of its own, as keras-hub's
    loop updates it (an update must leave an `ops.cond` branch as an
    output). PyTorch: `torch.no_grad()`, as keras-hub generates. TensorFlow:
    as they are (the gradient of the step's loss never reaches the integer
    tokens' loop), the seed variable assigned in place.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        mapping = [(v, ops.stop_gradient(v.value)) for v in student.variables]
        mapping += [(v, v.value) for v in sampler.variables]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            yield lambda: [scope.get_current_value(v) for v in sampler.variables]
        return
    context = contextlib.nullcontext()
    if backend == "torch":
        import torch

        context = torch.no_grad()
    with context:
        yield lambda: [v.value for v in sampler.variables]


@contextlib.contextmanager
def _using_sampler(model, sampler):
    """`model.sampler` (what its `generate_step` reads) is `sampler` inside."""
    own = getattr(model, "sampler", None)
    model.sampler = sampler
    try:
        yield
    finally:
        model.sampler = own


def keras_hub_module():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "kerasdistill.CausalLMDistiller trains keras-hub causal LMs, but "
            "keras-hub is not installed. Install it with "
            "`pip install 'kerasdistill[hub]'`."
        ) from error
    return keras_hub
