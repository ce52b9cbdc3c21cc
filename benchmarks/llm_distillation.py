"""On-policy against off-policy distillation of a causal LM, on a generation
task where errors compound: held-out exact match of greedy generations.

The task (made here, offline): arithmetic progressions modulo 29, the
prompt `[BOS, a, d, SEP]` and its completion, the next `terms` terms `a + d,
a + 2d, ...` (mod 29). Each term is the previous one plus `d`: a slip
carries on to every later term, and a generation is right only if all of
them are. The prompts `(a, d)`, `d != 0`, are split into training and
held-out ones. Teacher and students are keras-hub `GPT2CausalLM`s built
from config (no weights, no preprocessor); the teacher (2 layers, width 64)
is trained on the labels. The students (1 layer, width 32) start, as GKD's
do, from a student trained on the labels for a while (the start, one per
seed); every row then trains a copy of it for the same number of steps
(batches) on the same prompts, with a fresh optimizer of the same kind:

- labels only: the cross-entropy on the completions (`alpha = 1`);
- forward-KL token KD: `KL(teacher || student)` on the completions'
  tokens (`lmbda = 0`, `alpha = 0`), the GKD paper's supervised KD;
- sequence-level KD: the cross-entropy on the teacher's greedy
  completions of the same prompts (`kerasdistill.generate_transfer_set`,
  Kim & Rush 2016);
- GKD: `kerasdistill.CausalLMDistiller` with the generalized JSD of
  `beta` in {0, 0.5, 1} (forward KL, JSD, reverse KL) and `lmbda` in
  {0.5, 1}: that share of the steps trains on the student's own
  continuations of the batch's prompts (sampled at temperature 1, as GKD
  samples), scored by the teacher; `alpha = 0` (the GKD objective).

Reported: exact match (all terms right) of greedy generations on held-out
prompts, mean +- std over the seeds, with the teacher's and the start's. One JAX process
on CPU; each row's `CausalLMDistiller` is compiled once and trained from
fresh weights for every seed.

    python benchmarks/llm_distillation.py            # 3 seeds, 14 min on 2 shared CPU cores
    python benchmarks/llm_distillation.py --seeds 0 --rows labels gkd_1_0.5
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402  (tf.data shuffles the teacher's batches)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kerasdistill as kd  # noqa: E402

PAD, BOS, SEP, OFFSET = 0, 1, 2, 3
SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# name: (label, data, alpha, lmbda, beta)
ROWS = {
    "labels": ("labels only", "data", 1.0, 0.0, 0.0),
    "token_kd": ("forward-KL token KD", "data", 0.0, 0.0, 0.0),
    "seq_kd": ("sequence-level KD", "teacher", 1.0, 0.0, 0.0),
    **{
        f"gkd_{lmbda:g}_{beta:g}": (
            f"GKD, lmbda={lmbda:g}, beta={beta:g}",
            "data",
            0.0,
            lmbda,
            beta,
        )
        for lmbda in (0.5, 1.0)
        for beta in (0.0, 0.5, 1.0)
    },
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--terms", type=int, default=16)
    parser.add_argument("--modulus", type=int, default=29)
    parser.add_argument("--test", type=int, default=212, help="held-out prompts")
    parser.add_argument(
        "--warm-epochs", type=int, default=60, help="the shared labels-only start"
    )
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each row")
    parser.add_argument("--teacher-epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--student-width", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--sampler", default="random", help="on-policy sampler (keras-hub name)"
    )
    args = parser.parse_args()
    start = time.time()
    task = Task(args.terms, args.modulus)
    # The distillers freeze `teacher` (each seed's weights are set on it);
    # `teacher_trainer` trains them.
    teacher, teacher_trainer = gpt2(task, 2, 64), gpt2(task, 2, 64)
    compile_with_reset(teacher_trainer, SPARSE_CE, args)
    evaluator = gpt2(task, 1, args.student_width)  # generates for the EM
    warm = gpt2(task, 1, args.student_width)  # the students' shared start
    compile_with_reset(warm, SPARSE_CE, args, sampler="greedy")
    distillers = {name: None for name in args.rows}
    results = {name: [] for name in ["teacher", "start", *args.rows]}
    slips = []
    for seed in args.seeds:
        train, test = task.split(args.test, np.random.default_rng(seed))
        keras.utils.set_random_seed(seed)
        fit_labels(
            teacher_trainer,
            gpt2(task, 2, 64),
            task,
            train,
            args.teacher_epochs,
            seed,
            args,
        )
        teacher.set_weights(teacher_trainer.get_weights())
        results["teacher"].append(task.exact_match(teacher, test))
        slips.append(task.after_a_slip(teacher, test, np.random.default_rng(seed)))
        keras.utils.set_random_seed(seed + 1)
        fit_labels(
            warm,
            gpt2(task, 1, args.student_width),
            task,
            train,
            args.warm_epochs,
            seed,
            args,
        )
        results["start"].append(task.exact_match(warm, test))
        initial = warm.get_weights()
        transfer = kd.generate_transfer_set(  # sequence-level KD's data
            teacher,
            task.prompts(train),
            batch_size=args.batch_size,
            prompt_mask=True,
        )
        for name in args.rows:
            label, data, alpha, lmbda, beta = ROWS[name]
            if distillers[name] is None:
                distillers[name] = make_distiller(
                    teacher, task, args, alpha, lmbda, beta
                )
            distiller = distillers[name]
            reset(distiller, initial, distiller.student)
            distiller.seed_generator.state.assign(np.array([seed, 0], "uint32"))
            keras.utils.set_random_seed(seed)
            if data == "teacher":
                distiller.fit(transfer, epochs=args.epochs, verbose=0)
            else:
                x, y, weights = task.data(train)
                distiller.fit(
                    x,
                    y,
                    sample_weight=weights,
                    batch_size=args.batch_size,
                    epochs=args.epochs,
                    verbose=0,
                )
            evaluator.set_weights(distiller.student.get_weights())
            results[name].append(task.exact_match(evaluator, test))
            print(
                f"seed {seed} {label}: {results[name][-1]:.3f} "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )
    steps = -(-len(train) // args.batch_size)
    print(
        f"\nHeld-out exact match of greedy generations: {args.test} prompts "
        f"(a, d) never trained on, each continued by {args.terms} terms of "
        f"a + k d mod {args.modulus}; {len(args.seeds)} seeds, mean +- std. "
        f"Students: GPT-2, 1 layer, width {args.student_width}, started by "
        f"{args.warm_epochs * steps} steps on the labels (the start), then "
        f"{args.epochs * steps} steps of each row ({args.epochs} epochs of "
        f"{len(train)} prompts, batch {args.batch_size}), Adam"
        f"({args.learning_rate:g}). Teacher: GPT-2, 2 layers, width 64, "
        f"{args.teacher_epochs} epochs. On-policy samples: keras-hub's "
        f"{args.sampler!r} sampler at temperature 1.\n"
    )
    print("| model | exact match |")
    print("| --- | ---: |")
    for name, values in results.items():
        label = {"teacher": "teacher", "start": "start (labels only)"}.get(name)
        label = label or ROWS[name][0]
        print(f"| {label} | {np.mean(values):.3f} +- {np.std(values):.3f} |")
    follows, recovers = np.mean(slips, axis=0)
    print(
        f"\nThe teacher after a slip (one term of a held-out sequence replaced "
        f"by a wrong one): its next term is the wrong one + d in {follows:.1%} "
        f"of the cases, the progression's own next term in {recovers:.1%}."
    )
    print(f"\nTook {time.time() - start:.0f} s.")


class Task:
    """Arithmetic progressions modulo `modulus`: the prompt `[BOS, a, d, SEP]`
    and its completion, the `terms` next terms `a + d, a + 2d, ...`."""

    def __init__(self, terms, modulus):
        self.terms = terms
        self.modulus = modulus
        self.vocabulary = OFFSET + modulus
        self.prompt = 4  # BOS, a, d, SEP
        self.length = self.prompt + terms

    def split(self, test, rng):
        """`(train, test)` sequences: every prompt (a, d), d != 0, once, with
        `test` of them held out."""
        a, d = np.meshgrid(np.arange(self.modulus), np.arange(1, self.modulus))
        pairs = rng.permutation(np.stack([a.ravel(), d.ravel()], 1))
        return self.sequences(pairs[test:]), self.sequences(pairs[:test])

    def sequences(self, pairs):
        a, d = pairs[:, :1], pairs[:, 1:]
        steps = np.arange(1, self.terms + 1)[None]
        terms = (a + d * steps) % self.modulus
        count = len(pairs)
        return np.concatenate(
            [
                np.full((count, 1), BOS),
                a + OFFSET,
                d + OFFSET,
                np.full((count, 1), SEP),
                terms + OFFSET,
            ],
            axis=1,
        ).astype("int32")

    def prompt_mask(self, count):
        return np.arange(self.length)[None].repeat(count, 0) < self.prompt

    def data(self, sequences):
        """`(x, y, sample_weight)` of a CausalLMDistiller."""
        return kd.transformers.prompt_completion_data(
            sequences, self.prompt_mask(len(sequences))
        )

    def prompts(self, sequences):
        mask = self.prompt_mask(len(sequences))
        return {"token_ids": np.where(mask, sequences, PAD), "padding_mask": mask}

    def completed(self, model, sequences):
        """The sequences with `model`'s greedy completions of their prompts."""
        generated = model.generate(self.prompts(sequences), stop_token_ids=None)
        return np.asarray(generated["token_ids"], "int32")

    def after_a_slip(self, model, sequences, rng):
        """`(follows, recovers)`: how often `model`'s next term, after one
        term replaced by a wrong one, continues the wrong term (+ d) or the
        progression (what a student's slip meets in on-policy steps)."""
        count = len(sequences)
        index = rng.integers(self.prompt, self.length - 1, count)  # a term
        slipped = sequences.copy()
        rows = np.arange(count)
        shift = rng.integers(1, self.modulus, count)
        wrong = (sequences[rows, index] - OFFSET + shift) % self.modulus
        slipped[rows, index] = wrong + OFFSET
        inputs = {"token_ids": slipped, "padding_mask": np.ones_like(slipped)}
        logits = keras.ops.convert_to_numpy(model(inputs))
        predicted = logits[rows, index].argmax(-1) - OFFSET
        d = sequences[:, 2] - OFFSET
        follows = predicted == (wrong + d) % self.modulus
        recovers = predicted == sequences[rows, index + 1] - OFFSET
        return float(follows.mean()), float(recovers.mean())

    def exact_match(self, model, sequences):
        generated = self.completed(model, sequences)
        completion = slice(self.prompt, None)
        return float(
            np.mean(np.all(generated[:, completion] == sequences[:, completion], 1))
        )


def gpt2(task, layers, width):
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=task.vocabulary,
        num_layers=layers,
        num_heads=4 if width >= 64 else 2,
        hidden_dim=width,
        intermediate_dim=4 * width,
        max_sequence_length=task.length,
        dropout=0.0,
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(sampler="greedy")
    return model


def compile_with_reset(model, loss, args, **kwargs):
    """Compiles `model` once (one compiled step for every seed) and keeps
    its optimizer's initial state, which `reset` restores."""
    model.compile(keras.optimizers.Adam(args.learning_rate), loss, **kwargs)
    model.optimizer.build(model.trainable_variables)
    model.initial_optimizer = [v.numpy() for v in model.optimizer.variables]


def reset(model, weights, trained=None):
    """`model`'s optimizer back to its initial state, `trained` (the
    student's weights, or the model's own) set to `weights`."""
    (trained or model).set_weights(weights)
    for variable, value in zip(model.optimizer.variables, model.initial_optimizer):
        variable.assign(value)


def fit_labels(model, initial, task, train, epochs, seed, args):
    """Trains `model` from `initial`'s weights on the labels."""
    reset(model, initial.get_weights())
    x, y, weights = task.data(train)
    x = {k: v for k, v in x.items() if k != "prompt_mask"}
    batches = (
        tf.data.Dataset.from_tensor_slices((x, y, weights))
        .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        .batch(args.batch_size)
    )
    model.fit(batches, epochs=epochs, verbose=0)


def make_distiller(teacher, task, args, alpha, lmbda, beta):
    student = gpt2(task, 1, args.student_width)
    loss = kd.LogitsDistillation(1.0, loss="generalized_jsd", beta=beta)
    distiller = kd.CausalLMDistiller(
        teacher,
        student,
        loss,
        student_loss_weight=alpha,
        lmbda=lmbda,
        sampler=args.sampler,
    )
    compile_with_reset(distiller, SPARSE_CE, args)
    return distiller


if __name__ == "__main__":
    main()
