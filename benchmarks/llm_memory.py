"""Peak memory of one training step of `kerasdistill.CausalLMDistiller`
over Gemma 3's vocabulary: the full logits (naive) against the step over
chunks of positions from the hidden states (`chunk_size=`).

Teacher and student are keras-hub `GemmaBackbone`s built from config (no
weights) with Gemma 3's vocabulary of 262,144 tokens and 2 layers (teacher
width 64, student 32, Gemma 2's final logit soft-cap of 30), in
`GemmaCausalLM`s without preprocessor. The step is the library's: the
`CausalLMDistiller`'s train step as `fit()` runs it (Keras's JAX trainer,
through `train_on_batch` on one batch of 2 sequences with a padding mask
and a 16-token prompt), with the forward KL at T = 1 on the completion's
tokens, the student's cross-entropy on the next tokens (alpha 0.5) and an
Adam update, off-policy (`lmbda=0`: the on-policy branch is compiled into
the step, not taken):

- naive: `chunk_size=None`, both networks output their `(batch,
  positions, 262144)` logits;
- chunked: `chunk_size=128`, both backbones output their hidden states,
  projected to logits 128 positions at a time under `keras.remat`, for
  the divergence and the cross-entropy alike.

What is measured, in a fresh process per configuration (JAX on CPU, whose
devices report no memory statistics):

- RSS: the process's resident set high-water mark (`VmHWM`, reset through
  `/proc/self/clear_refs` just before) during the first `train_on_batch`,
  minus the resident set just before it, when the models and the optimizer
  are in memory: the step's buffers plus its tracing and compilation (a
  later step shows less, as XLA's CPU allocator keeps the first step's
  buffers resident);
- XLA temp: the temporary buffers XLA plans for the train step
  (`memory_analysis().temp_size_in_bytes` of Keras's `train_step`
  compiled for the same batch), the same figure without the allocator.

    python benchmarks/llm_memory.py            # 9 to 12 minutes on 2 CPU cores
    python benchmarks/llm_memory.py --positions 1024 --chunk-size 64
"""

import argparse
import json
import os
import subprocess
import sys
import time

VOCAB, BATCH, TEACHER_WIDTH, STUDENT_WIDTH, LAYERS, SOFT_CAP, PROMPT = (
    262_144,
    2,
    64,
    32,
    2,
    30.0,
    16,
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
        f"\nOne training step of kerasdistill.CausalLMDistiller (forward KL on "
        f"the completion, cross-entropy, Adam) between Gemma causal LMs with a "
        f"{VOCAB:,}-token vocabulary, batch {BATCH}; chunked: chunk_size="
        f"{args.chunk_size}. JAX {rows[0][1]['jax']} on CPU, peak memory "
        "above the models in MiB:\n"
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

    distiller, batch = compiled_distiller(mode, positions, chunk_size)
    distiller.optimizer.build(distiller.trainable_variables)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    logs = distiller.train_on_batch(*batch, return_dict=True)
    peak = _status("VmHWM")
    state = tuple(
        [v.value for v in variables]
        for variables in (
            distiller.trainable_variables,
            distiller.non_trainable_variables,
            distiller.optimizer.variables,
            distiller.metrics_variables,
        )
    )
    data = jax.tree.map(jax.numpy.asarray, batch)
    compiled = (
        jax.jit(distiller.train_step, donate_argnums=0).lower(state, data).compile()
    )
    return {
        "mode": mode,
        "positions": positions,
        "loss": float(logs["loss"]),
        "rss_mib": (peak - before) / 2**20,
        "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
        "jax": jax.__version__,
    }


def compiled_distiller(mode, positions, chunk_size):
    """`(compiled CausalLMDistiller, (x, y, sample_weight))`."""
    os.environ["KERAS_BACKEND"] = "jax"
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

    distiller = kd.CausalLMDistiller(
        causal_lm(TEACHER_WIDTH, 0, "teacher"),
        causal_lm(STUDENT_WIDTH, 1, "student"),
        kd.LogitsDistillation(1.0, mask="padding_mask"),
        student_loss_weight=0.5,
        lmbda=0.0,
        chunk_size=chunk_size if mode == "chunked" else None,
    )
    distiller.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    lengths = np.array([positions + 1, (positions + 1) * 3 // 4])
    ids = rng.integers(1, VOCAB, (BATCH, positions + 1)).astype("int32")
    padding = np.arange(positions + 1)[None] < lengths[:, None]
    prompt = np.arange(positions + 1)[None].repeat(BATCH, 0) < PROMPT
    x, y, weights = kd.transformers.prompt_completion_data(
        np.where(padding, ids, 0), prompt, padding
    )
    return distiller, (x, y, weights)


def _status(field):
    """A `/proc/self/status` memory field, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"No {field} in /proc/self/status")


if __name__ == "__main__":
    main()
