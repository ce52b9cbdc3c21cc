"""Sequence-level knowledge distillation (Kim & Rush 2016): the student is
trained on the sequences its teacher generates, not only on the teacher's
per-token distributions.

`generate_transfer_set` runs a keras-hub `CausalLM` teacher's own
`generate()` on token-id prompts (no preprocessor needed) and returns the
generated sequences shaped as a keras-hub causal LM trains on them: inputs
`{"token_ids", "padding_mask"}`, labels shifted by one token, and the
padding mask of the labels as `sample_weight`. keras-hub is imported when
the function runs, never by `import kerasdistill`.
"""

import keras
import numpy as np


def generate_transfer_set(
    teacher,
    prompts,
    max_length=None,
    sampler="greedy",
    stop_token_ids=None,
    loss_on_prompt=False,
    batch_size=32,
    shuffle=True,
    prompt_mask=False,
):
    """Generates the teacher's sequences for sequence-level distillation.

    For each prompt the teacher continues the sequence with keras-hub's
    `CausalLM.generate` (greedy by default: Kim & Rush approximate the
    teacher's most likely sequence by beam search; pass `sampler="beam"` for
    that). The returned dataset yields `(x, y, sample_weight)` batches as a
    keras-hub `CausalLMPreprocessor` makes them: `x = {"token_ids":
    sequence[:, :-1], "padding_mask": mask[:, :-1]}`, `y = sequence[:, 1:]`
    and `sample_weight = mask[:, 1:]`, so that the student fits the
    teacher's generated tokens. Give it to `student.fit` (sequence-level
    KD), or to a `kerasdistill.Distiller` with a token-level
    `LogitsDistillation` (both, which Kim & Rush found best).

    Args:
        teacher: A `keras_hub.models.CausalLM` (e.g. `GPT2CausalLM`); its
            preprocessor, if any, is detached during the call (the prompts
            are token ids).
        prompts: Token-id prompts, a dict `{"token_ids": (n, length) int,
            "padding_mask": (n, length) bool or 0/1}` whose prompt tokens
            are left-aligned (mask true) and followed by padding (mask
            false); the generated sequences have this `length`.
        max_length: Optional length of the generated sequences, at least
            the prompts' `length` (they are padded to it). Defaults to the
            prompts' length.
        sampler: A keras-hub sampler name or `keras_hub.samplers.Sampler`
            (`"greedy"`, `"beam"`, `"top_k"`, ...) used for this call only,
            or `None` for the teacher's own (set by `teacher.compile`).
        stop_token_ids: Optional tuple of token ids (the end token) after
            which a sequence stops: its later positions are padding.
            `None` generates up to the full length.
        loss_on_prompt: Whether the labels at prompt positions count in
            `sample_weight`. Defaults to `False`: the student learns the
            teacher's continuations given the prompts.
        batch_size: Prompts per `generate` call, and samples per batch of
            the returned dataset.
        shuffle: Whether the dataset is reshuffled at each iteration.
        prompt_mask: Whether `x` also holds `"prompt_mask"`, true on each
            prompt's tokens: the batches of a
            `kerasdistill.CausalLMDistiller`, whose off-policy steps then
            train on the teacher's sequences and on-policy steps on the
            student's own continuations of the same prompts (TRL's
            `seq_kd=True` with `lmbda`). Defaults to `False` (the inputs
            of a keras-hub causal LM).

    Returns:
        A `tf.data.Dataset` of `(x, y, sample_weight)` batches.

    Raises:
        ImportError: when keras-hub is not installed.
        TypeError: when `teacher` is not a keras-hub `CausalLM`.
        ValueError: for prompts not shaped as described.

    Example:

    ```python
    transfer = kerasdistill.generate_transfer_set(
        teacher_lm, {"token_ids": prompt_ids, "padding_mask": prompt_mask},
        max_length=64, stop_token_ids=(end_token_id,),
    )
    student_lm.fit(transfer, epochs=3)  # sequence-level KD
    ```

    Reference:
        Kim & Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016.
        https://arxiv.org/abs/1606.07947
    """
    keras_hub = _keras_hub()
    if not isinstance(teacher, keras_hub.models.CausalLM):
        raise TypeError(
            "Expected the teacher to be a keras_hub.models.CausalLM (e.g. "
            "keras_hub.models.GPT2CausalLM), whose generate() makes the "
            f"sequences. Received: {type(teacher).__name__}. Wrap the "
            "teacher's backbone in its keras-hub CausalLM task."
        )
    _check_int(batch_size, "batch_size")
    token_ids, padding_mask = _prompts(prompts, max_length)
    generated = _generate(
        teacher, token_ids, padding_mask, sampler, stop_token_ids, batch_size, keras_hub
    )
    sequences, mask = generated["token_ids"], generated["padding_mask"].astype(bool)
    weights = mask[:, 1:].copy()
    if not loss_on_prompt:
        weights &= ~padding_mask[:, 1:]
    x = {"token_ids": sequences[:, :-1], "padding_mask": mask[:, :-1]}
    if prompt_mask:
        x["prompt_mask"] = padding_mask[:, :-1]
    element = (x, sequences[:, 1:], weights.astype("float32"))
    import tensorflow as tf  # tf.data, which fit() takes on every backend

    dataset = tf.data.Dataset.from_tensor_slices(element)
    if shuffle:
        dataset = dataset.shuffle(len(sequences), reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "generate_transfer_set uses keras-hub's CausalLM.generate, but "
            "keras-hub is not installed. Install it with "
            "`pip install 'kerasdistill[hub]'`."
        ) from error
    return keras_hub


def _check_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Expected `{name}` to be an integer >= 1. Received: {name}={value!r}"
        )


def _prompts(prompts, max_length):
    """The prompts as `(token_ids int32, padding_mask bool)`, padded to
    `max_length`, after checking their shape and layout."""
    if not isinstance(prompts, dict) or sorted(prompts) != [
        "padding_mask",
        "token_ids",
    ]:
        received = (
            sorted(prompts) if isinstance(prompts, dict) else type(prompts).__name__
        )
        raise ValueError(
            "Expected `prompts` to be a dict {'token_ids': (n, length) ints, "
            "'padding_mask': (n, length)}, the inputs of a keras-hub CausalLM "
            f"without preprocessor. Received: {received}. Tokenize the "
            "prompts first (e.g. with the model's preprocessor)."
        )
    token_ids = np.asarray(keras.ops.convert_to_numpy(prompts["token_ids"]))
    padding_mask = np.asarray(keras.ops.convert_to_numpy(prompts["padding_mask"]))
    if token_ids.ndim != 2 or padding_mask.shape != token_ids.shape:
        raise ValueError(
            "Expected prompts['token_ids'] and prompts['padding_mask'] of the "
            f"same shape (n, length). Received: {token_ids.shape} and "
            f"{padding_mask.shape}."
        )
    if not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(
            f"Expected integer token ids. Received dtype {token_ids.dtype}."
        )
    padding_mask = padding_mask.astype(bool)
    lengths = padding_mask.sum(axis=1)
    left_aligned = padding_mask == (
        np.arange(token_ids.shape[1])[None] < lengths[:, None]
    )
    if len(token_ids) == 0 or lengths.min() < 1 or not left_aligned.all():
        raise ValueError(
            "Expected each prompt to hold at least one token, left-aligned: "
            "padding_mask true on the prompt, then false. Received "
            f"{len(token_ids)} prompts, prompt lengths from "
            f"{lengths.min() if len(lengths) else 0}, "
            f"{int((~left_aligned.all(axis=1)).sum())} not left-aligned."
        )
    length = token_ids.shape[1] if max_length is None else max_length
    _check_int(length, "max_length")
    if length < token_ids.shape[1] or lengths.max() >= length:
        raise ValueError(
            "Expected max_length to leave room to generate after the longest "
            f"prompt ({lengths.max()} tokens, padded to {token_ids.shape[1]}). "
            f"Received: max_length={max_length}. Pass a larger max_length."
        )
    pad = ((0, 0), (0, length - token_ids.shape[1]))
    return (
        np.pad(token_ids.astype("int32"), pad),
        np.pad(padding_mask, pad, constant_values=False),
    )


def _generate(
    teacher, token_ids, padding_mask, sampler, stop_token_ids, batch_size, keras_hub
):
    """`teacher.generate` batch by batch on token ids, with `sampler` and
    without a preprocessor for this call only (the teacher's own sampler,
    generate function and preprocessor are restored)."""
    own = (teacher.sampler, teacher.generate_function, teacher.preprocessor)
    teacher.preprocessor = None  # keras-hub's way to generate from token ids
    if sampler is not None:
        teacher.sampler = keras_hub.samplers.get(sampler)
        teacher.generate_function = None
    try:
        outputs = [
            teacher.generate(
                {
                    "token_ids": token_ids[i : i + batch_size],
                    "padding_mask": padding_mask[i : i + batch_size],
                },
                stop_token_ids=None
                if stop_token_ids is None
                else tuple(stop_token_ids),
            )
            for i in range(0, len(token_ids), batch_size)
        ]
    finally:
        teacher.sampler, teacher.generate_function, teacher.preprocessor = own
    return {
        key: np.concatenate([np.asarray(output[key]) for output in outputs])
        for key in ("token_ids", "padding_mask")
    }
