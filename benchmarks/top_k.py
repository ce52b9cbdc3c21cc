"""Top-k token distillation against full token KD on a causal LM (CPU):
memory and step time.

A keras-hub GPT-2 teacher (2 layers, width 128) and student (1 layer, width
64), built from config without weights, with a vocabulary of 16,384 tokens;
256 random sequences of 32 tokens, batches of 8. Four ways to train the
student with `LogitsDistillation(temperature=2)`: the live teacher with the
full loss or `top_k=32`, and a `cache_teacher_outputs` dataset (in memory)
of the full outputs or of the top-32 logits and indices.

What is measured, all in one run:

- teacher targets per token: the bytes the cache holds per token (the
  arrays' sizes), and the size of the same cache written to disk;
- peak memory: the peak resident set size (`ru_maxrss`) of a fresh process
  that builds the models (and the cache) and trains two epochs, one process
  per configuration, minus that of a process that builds the models alone;
- step time: the configurations are timed in rounds in one process, one
  epoch of each per round (the first round, tracing, left out); a time is
  the median over rounds, and ratios are medians of per-round ratios
  against the live full-KD step.

    python benchmarks/top_k.py            # about 3 minutes on 2 CPU cores
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kerasdistill  # noqa: E402

VOCAB, LENGTH, SEQUENCES, BATCH_SIZE, TOP_K, TEMPERATURE = 16_384, 32, 256, 8, 32, 2.0
CONFIGS = ("live, full", "live, top-32", "cache, full", "cache, top-32")


def gpt2(layers, width, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=layers,
        num_heads=2,
        hidden_dim=width,
        intermediate_dim=2 * width,
        max_sequence_length=LENGTH,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def make_data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, size=(SEQUENCES, LENGTH + 1)).astype("int32")
    x = {
        "token_ids": ids[:, :-1],
        "padding_mask": np.ones((SEQUENCES, LENGTH), "int32"),
    }
    return x, ids[:, 1:], np.ones((SEQUENCES, LENGTH), "float32")


def build(config, teacher, student, data):
    """A compiled Distiller and the data it fits on, for `config`."""
    top_k = TOP_K if config.endswith(f"top-{TOP_K}") else None
    loss = kerasdistill.LogitsDistillation(TEMPERATURE, top_k=top_k)
    distiller = kerasdistill.Distiller(teacher, student, loss, student_loss_weight=0.5)
    distiller.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    if config.startswith("cache"):
        data = kerasdistill.cache_teacher_outputs(
            teacher, data, [loss], batch_size=BATCH_SIZE
        )
        return distiller, (data,), {}
    x, y, weights = data
    return distiller, (x, y), {"sample_weight": weights, "batch_size": BATCH_SIZE}


def memory_probe(config):
    """Peak RSS (MiB) of this fresh process after two epochs of `config`
    (`"models"`: after building the models only)."""
    teacher, student = gpt2(2, 128, 0), gpt2(1, 64, 1)
    if config != "models":
        distiller, args, kwargs = build(config, teacher, student, make_data())
        distiller.fit(*args, epochs=2, verbose=0, **kwargs)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_rss_mib(config):
    output = subprocess.run(
        [sys.executable, __file__, "--memory-probe", config],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(output.strip().splitlines()[-1])


def target_bytes_per_token(teacher, data, top_k):
    """Bytes per token of the cached teacher outputs: of the arrays of a
    batch, and of the cache written to disk."""
    loss = kerasdistill.LogitsDistillation(TEMPERATURE, top_k=top_k)
    with tempfile.TemporaryDirectory() as path:
        cached = kerasdistill.cache_teacher_outputs(
            teacher, data, [loss], batch_size=BATCH_SIZE, path=os.path.join(path, "c")
        )
        x, _, _ = cached[0]
        arrays = keras.tree.flatten(
            x[kerasdistill.cache.marker_key(teacher)]["outputs"]
        )
        in_memory = sum(a.nbytes for a in arrays) / (BATCH_SIZE * LENGTH)
        on_disk = sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return in_memory, on_disk / (SEQUENCES * LENGTH)


def epoch_seconds(distiller, args, kwargs):
    start = time.perf_counter()
    distiller.fit(*args, epochs=1, verbose=0, **kwargs)
    return time.perf_counter() - start


def main(rounds):
    data = make_data()
    teacher = gpt2(2, 128, 0)
    rows = {}
    for config in CONFIGS:
        rows[config] = {"memory": peak_rss_mib(config)}
    floor = peak_rss_mib("models")
    for top_k, config in ((None, "cache, full"), (TOP_K, f"cache, top-{TOP_K}")):
        rows[config]["bytes"], rows[config]["disk"] = target_bytes_per_token(
            teacher, data, top_k
        )
    built = {config: build(config, teacher, gpt2(1, 64, 1), data) for config in CONFIGS}
    times = {config: [] for config in CONFIGS}
    steps = -(-SEQUENCES // BATCH_SIZE)
    for round_ in range(rounds + 1):
        for config in CONFIGS:
            seconds = epoch_seconds(*built[config])
            if round_:
                times[config].append(seconds / steps)
    reference = np.array(times["live, full"])
    print(
        f"GPT-2 teacher 2x128 -> student 1x64, vocabulary {VOCAB}, {SEQUENCES} "
        f"sequences of {LENGTH} tokens, batch {BATCH_SIZE}, top_k={TOP_K}, "
        f"{rounds} timed rounds, backend {keras.backend.backend()}"
    )
    print(f"peak RSS of a process that only builds the models: {floor:.0f} MiB")
    print(
        "| configuration | teacher targets / token (memory) | on disk / token "
        "| peak RSS above the models | step time | vs live, full |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for config in CONFIGS:
        row = rows[config]
        bytes_ = f"{row['bytes']:,.0f} B" if "bytes" in row else "-"
        disk = f"{row['disk']:,.0f} B" if "disk" in row else "-"
        ratio = np.median(np.array(times[config]) / reference)
        print(
            f"| {config} | {bytes_} | {disk} | {row['memory'] - floor:,.0f} MiB "
            f"| {1000 * np.median(times[config]):.1f} ms | {ratio:.2f}x |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--memory-probe", choices=(*CONFIGS, "models"))
    arguments = parser.parse_args()
    if arguments.memory_probe:
        memory_probe(arguments.memory_probe)
    else:
        main(arguments.rounds)
