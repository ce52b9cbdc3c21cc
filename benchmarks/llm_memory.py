"""Peak memory of one token-distillation training step over Gemma 3's
vocabulary: the full logits (naive) against chunks of positions from the
hidden states (`kerasdistill.losses.chunked_token_divergence`).

Teacher and student are keras-hub `GemmaBackbone`s built from config (no
weights) with Gemma 3's vocabulary of 262,144 tokens and 2 layers (teacher
width 64, student 32, Gemma 2's final logit soft-cap of 30), in
`GemmaCausalLM`s without preprocessor. One training step is the forward
KL at T = 1 over a batch of 2 sequences with a padding mask, its gradients
with respect to the student's weights, and an Adam update:

- naive: both causal LMs output their `(batch, positions, 262144)` logits,
  and `kerasdistill.LogitsDistillation(mask="padding_mask")` compares them;
- chunked: both backbones output their hidden states, and
  `chunked_token_divergence` projects them with each model's
  `token_embedding(reverse=True)` (soft-cap included) `chunk_size`
  positions at a time, under `keras.remat`.

The step is built here with `jax.value_and_grad` over the models' variables
(`keras.StatelessScope`) and the optimizer's `stateless_apply`, jitted with
the weights and optimizer state donated, as Keras's JAX trainer does: the
`Distiller`'s own train step does not yet skip the student's full logits.

What is measured, in a fresh process per configuration (JAX on CPU, whose
devices report no memory statistics):

- peak RSS above the models: the process's resident set high-water mark
  (`VmHWM`, reset through `/proc/self/clear_refs` just before) during the
  first step, minus its resident set just before it, when the models,
  optimizer state, batch and compiled step are all in memory (a second
  step would find the first one's buffers still held by the allocator);
- XLA temp: the temporary buffers XLA's buffer assignment plans for the
  compiled step (`compiled.memory_analysis().temp_size_in_bytes`), the
  same figure without the allocator's noise.

    python benchmarks/llm_memory.py            # about 10 minutes on 2 CPU cores
    python benchmarks/llm_memory.py --positions 256 --chunk-size 64
"""

import argparse
import json
import os
import subprocess
import sys
import time

VOCAB, BATCH, TEACHER_WIDTH, STUDENT_WIDTH, LAYERS, SOFT_CAP = (
    262_144,
    2,
    64,
    32,
    2,
    30.0,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "POSITIONS"))
    args = parser.parse_args()
    if args.measure:
        mode, positions = args.measure
        print(json.dumps(measure(mode, int(positions), args.chunk_size)))
        return
    start = time.time()
    rows = []
    for positions in args.positions:
        naive = run_child("naive", positions, args.chunk_size)
        chunked = run_child("chunked", positions, args.chunk_size)
        rows.append((positions, naive, chunked))
    print(
        f"\nOne training step (loss, gradients, Adam) of token KD, Gemma "
        f"backbones with a {VOCAB:,}-token vocabulary, batch {BATCH}; "
        f"chunked: chunk_size={args.chunk_size} positions. JAX "
        f"{rows[0][1]['jax']} on CPU, peak memory above the models in MiB:\n"
    )
    print(
        "| positions | naive RSS | chunked RSS | chunked / naive "
        "| naive XLA temp | chunked XLA temp | chunked / naive | loss rel. diff |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for positions, naive, chunked in rows:
        difference = abs(naive["loss"] - chunked["loss"]) / abs(naive["loss"])
        print(
            f"| {positions:,} | {naive['rss_mib']:,.0f} | {chunked['rss_mib']:,.0f} "
            f"| {chunked['rss_mib'] / naive['rss_mib']:.3f} "
            f"| {naive['temp_mib']:,.0f} | {chunked['temp_mib']:,.0f} "
            f"| {chunked['temp_mib'] / naive['temp_mib']:.3f} "
            f"| {difference:.1e} |"
        )
    print(
        "\nOne (batch, positions, vocabulary) float32 tensor: "
        + ", ".join(
            f"{BATCH * p * VOCAB * 4 / 2**20:,.0f} MiB at {p:,}" for p, _, _ in rows
        )
        + f"; one chunk's: {BATCH * args.chunk_size * VOCAB * 4 / 2**20:,.0f} MiB."
    )
    print(f"Took {time.time() - start:.0f} s.")


def run_child(mode, positions, chunk_size):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--measure",
        mode,
        str(positions),
        "--chunk-size",
        str(chunk_size),
    ]
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} at {positions} positions failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(mode, positions, chunk_size):
    """One configuration, in this (fresh) process."""
    import jax

    compiled, state, x = compiled_step(mode, positions, chunk_size)
    temp = compiled.memory_analysis().temp_size_in_bytes
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    loss, trainable_values, _ = compiled(*state, x)
    jax.block_until_ready(trainable_values)
    peak = _status("VmHWM")
    return {
        "mode": mode,
        "positions": positions,
        "loss": float(loss),
        "rss_mib": (peak - before) / 2**20,
        "temp_mib": temp / 2**20,
        "jax": jax.__version__,
    }


def compiled_step(mode, positions, chunk_size):
    """`(compiled step, (trainable, optimizer, fixed) values, batch)`."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    import keras_hub
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import kerasdistill as kd

    def causal_lm(width, seed, name):
        keras.utils.set_random_seed(seed)
        backbone = keras_hub.models.GemmaBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=2,
            num_key_value_heads=1,
            hidden_dim=width,
            intermediate_dim=2 * width,
            head_dim=16,
            final_logit_soft_cap=SOFT_CAP,
            name=f"{name}_backbone",
        )
        return keras_hub.models.GemmaCausalLM(
            backbone=backbone, preprocessor=None, name=name
        )

    teacher = causal_lm(TEACHER_WIDTH, 0, "teacher")
    student = causal_lm(STUDENT_WIDTH, 1, "student")
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(student.trainable_variables)
    rng = np.random.default_rng(0)
    lengths = np.array([positions, positions * 3 // 4])
    x = {
        "token_ids": rng.integers(1, VOCAB, (BATCH, positions)).astype("int32"),
        "padding_mask": (np.arange(positions)[None] < lengths[:, None]).astype("int32"),
    }
    x = {k: jax.numpy.asarray(v) for k, v in x.items()}
    full_loss = kd.LogitsDistillation(1.0, mask="padding_mask")
    trainable = student.trainable_variables
    fixed = teacher.variables + student.non_trainable_variables

    def loss_fn(trainable_values, fixed_values, x):
        mapping = list(zip(trainable, trainable_values)) + list(
            zip(fixed, fixed_values)
        )
        with keras.StatelessScope(state_mapping=mapping):
            if mode == "naive":
                teacher_logits = jax.lax.stop_gradient(teacher(x))
                return full_loss.compute_loss(teacher_logits, student(x), inputs=x)
            per_sample = kd.losses.chunked_token_divergence(
                teacher.backbone(x),
                student.backbone(x),
                lambda h: teacher.backbone.token_embedding(h, reverse=True),
                lambda h: student.backbone.token_embedding(h, reverse=True),
                mask=x["padding_mask"],
                chunk_size=chunk_size,
            )
            return keras.ops.mean(per_sample)

    def step(trainable_values, optimizer_values, fixed_values, x):
        loss, gradients = jax.value_and_grad(loss_fn)(trainable_values, fixed_values, x)
        trainable_values, optimizer_values = optimizer.stateless_apply(
            optimizer_values, gradients, trainable_values
        )
        return loss, trainable_values, optimizer_values

    state = (
        [v.value for v in trainable],
        [v.value for v in optimizer.variables],
        [v.value for v in fixed],
    )
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*state, x).compile()
    return compiled, state, x


def _status(field):
    """A `/proc/self/status` memory field, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"No {field} in /proc/self/status")


if __name__ == "__main__":
    main()
