"""Distilling a causal language model (keras-hub GPT-2 from config, no
weights): token-level KD on the teacher's top-k logits, and sequence-level
KD (Kim & Rush 2016) on sequences the teacher generates.

The task is made here: a sequence `[BOS, a, d, SEP, a, a+d, a+2d, ...]`
(mod 29) continues an arithmetic progression from its prompt `[BOS, a, d,
SEP]`. The teacher (2 layers, width 64) learns it from 3,200 sequences; the
student (1 layer, width 32) has 320 labeled sequences, plus the prompts of
the 3,200 (continuations unknown to it), which the teacher completes for
sequence-level KD. Every student trains for the same number of epochs
(an epoch of sequence-level KD covers the 3,200 completed prompts); reported is the accuracy of the next token after the prompt (teacher
forcing) on 512 test sequences. Run: `python examples/causal_lm_distillation.py`
(1-2 minutes on 2 CPU cores); needs keras-hub (`pip install 'kerasdistill[hub]'`).
"""

import keras
import keras_hub
import numpy as np

import kerasdistill as kd

MODULUS, LENGTH, PROMPT = 29, 12, 4
BOS, SEP, OFFSET = 1, 2, 3
VOCAB = OFFSET + MODULUS
SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def sequences(count, rng):
    a = rng.integers(0, MODULUS, size=(count, 1))
    d = rng.integers(1, MODULUS, size=(count, 1))
    progression = (a + d * np.arange(LENGTH - PROMPT)[None]) % MODULUS + OFFSET
    header = np.concatenate(
        [np.full((count, 1), BOS), a + OFFSET, d + OFFSET, np.full((count, 1), SEP)], 1
    )
    return np.concatenate([header, progression], 1).astype("int32")


def causal_lm_data(ids):
    """Inputs, next-token labels, and weights on the tokens after the prompt."""
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    weights = (np.arange(1, LENGTH) >= PROMPT)[None].repeat(len(ids), 0)
    return x, ids[:, 1:], weights.astype("float32")


def gpt2(layers, width, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=layers,
        num_heads=2,
        hidden_dim=width,
        intermediate_dim=2 * width,
        max_sequence_length=LENGTH,
        dropout=0.0,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def accuracy(model, test):
    x, y, weights = test
    predicted = np.argmax(
        keras.ops.convert_to_numpy(model.predict(x, batch_size=64, verbose=0)), -1
    )
    return float(np.sum((predicted == y) * weights) / np.sum(weights))


def compiled_distiller(teacher, student, top_k):
    distiller = kd.Distiller(
        teacher,
        student,
        kd.LogitsDistillation(temperature=2.0, top_k=top_k),
        student_loss_weight=0.5,
    )
    distiller.compile(keras.optimizers.Adam(3e-3), SPARSE_CE)
    return distiller


def main(
    seed=0, epochs=30, teacher_epochs=30, teacher_sequences=3200, labeled=320, top_k=4
):
    rng = np.random.default_rng(seed)
    teacher_ids = sequences(teacher_sequences, rng)
    labeled_ids = teacher_ids[:labeled]
    test = causal_lm_data(sequences(512, rng))

    teacher = gpt2(2, 64, seed)
    teacher.compile(keras.optimizers.Adam(3e-3), SPARSE_CE, sampler="greedy")
    x, y, weights = causal_lm_data(teacher_ids)
    teacher.fit(
        x, y, sample_weight=weights, batch_size=64, epochs=teacher_epochs, verbose=0
    )

    x, y, weights = causal_lm_data(labeled_ids)
    baseline = gpt2(1, 32, seed + 1)
    baseline.compile(keras.optimizers.Adam(3e-3), SPARSE_CE)
    baseline.fit(x, y, sample_weight=weights, batch_size=32, epochs=epochs, verbose=0)

    token_kd = compiled_distiller(teacher, gpt2(1, 32, seed + 1), top_k)
    token_kd.fit(x, y, sample_weight=weights, batch_size=32, epochs=epochs, verbose=0)

    # Sequence-level KD: the teacher completes the prompts of all 3,200
    # sequences; the student fits them (and the teacher's top-k logits).
    prompts = np.zeros((teacher_sequences, LENGTH), "int32")
    prompts[:, :PROMPT] = teacher_ids[:, :PROMPT]
    mask = np.arange(LENGTH)[None].repeat(teacher_sequences, 0) < PROMPT
    transfer = kd.generate_transfer_set(
        teacher, {"token_ids": prompts, "padding_mask": mask}, batch_size=64
    )
    sequence_kd = compiled_distiller(teacher, gpt2(1, 32, seed + 1), top_k)
    sequence_kd.fit(transfer, epochs=epochs, verbose=0)

    print(f"next-token accuracy after the prompt, {len(test[1])} test sequences")
    print(f"{'model':<44}{'params':>9}{'accuracy':>10}")
    rows = [
        ("teacher", teacher),
        (f"student, labels only ({labeled} sequences)", baseline),
        (f"student, distilled: token KD top-{top_k}", token_kd.student),
        ("student, distilled: + sequence-level KD", sequence_kd.student),
    ]
    for name, model in rows:
        print(f"{name:<44}{model.count_params():>9,}{accuracy(model, test):>10.4f}")


if __name__ == "__main__":
    main()
