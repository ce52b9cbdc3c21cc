"""MNIST-1D benchmark: distilling a CNN into an MLP, where distillation pays.

MNIST-1D (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D",
ICML 2024) is generated offline by the `mnist1d` package: 4,000 training
and 1,000 test signals of length 40, ten classes. Its README publishes
baselines (logistic regression 32%, MLP 68%, CNN 94%, GRU 91%); this script
first reproduces the MLP and the CNN with the architectures of the
repository's `notebooks/models.py` and the recipe of its
`notebooks/train.py` (Adam at 1e-2, batches of 100, 6,000 steps: 150
epochs; Keras's default initializers instead of PyTorch's).

Then the CNN (5,210 parameters, ~32k multiply-adds per signal) teaches the
MLP (15,210 parameters, ~15k multiply-adds): the MLP has more weights but
none of the CNN's translation bias, and on labels alone it overfits (100%
training accuracy, 68% test). The teacher transfers that bias through its
outputs on inputs it labels, so the student's owner needs inputs, not
labels: more signals drawn from the same generator under another seed (a
user's unlabeled data), N of them. The rows:

- the MLP on the 4,000 labels alone (the fair baseline);
- KD with the same 4,000 labels (alpha 0.5), with kerasdistill and with
  `keras.distillation` (given `keras.losses.KLDivergence()`: its default
  `loss="kl_divergence"` is applied to raw logits);
- (a) a transfer set: the 4,000 labeled inputs and the N unlabeled ones,
  without labels, pure KD (`student_loss_weight=0`: the teacher, which fits
  its training labels exactly, labels all of them), for N in 4,000, 16,000
  and 64,000; `keras.distillation` on the same transfer set at the largest N;
- (b) the 4,000 labels and the N unlabeled inputs in one fit (alpha 0.5 on
  the labeled samples) through `kerasdistill.data.labeled_and_unlabeled`,
  labeled samples in proportion to their share of the inputs.

Every student row starts from the same initial weights and trains for the
same epochs (an epoch is one pass over the row's training inputs) with the
same optimizer, batch size and learning rate. "gap closed" is
`(acc - label-only) / (teacher - label-only)`. Each figure is the test
accuracy after the last epoch, mean +- std over the seeds (the seed sets
the initial weights, the shuffling and the unlabeled draw; the labeled and
test signals are the published split). The teacher trains once per seed.

`make_dataset` standardizes each generated set by its own mean and standard
deviation, so the unlabeled inputs are scaled as the published ones are.

    pip install kerasdistill[benchmarks]
    python benchmarks/mnist1d.py                # 5 seeds; 46 min on 2 shared cores
    python benchmarks/mnist1d.py --quick        # one seed, small N, 10 epochs
    python benchmarks/mnist1d.py --sizes 40000  # the rows at N = 40,000 only
"""

import argparse
import os
import sys
import time
import warnings

# Keras reads the backend once, on import: --backend is read before it.
BACKEND_PARSER = argparse.ArgumentParser(add_help=False)
BACKEND_PARSER.add_argument(
    "--backend",
    choices=("jax", "tensorflow", "torch"),
    help="Keras backend (default: $KERAS_BACKEND, else jax, fastest here on CPU)",
)
_BACKEND = BACKEND_PARSER.parse_known_args()[0].backend
os.environ["KERAS_BACKEND"] = _BACKEND or os.environ.get("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras warns that fit(shuffle=True) is ignored for any tf.data.Dataset; the
# cached datasets reshuffle themselves at each epoch.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

# Run as a script, this file's folder comes first on sys.path, where this
# file would shadow the mnist1d package: the repository root replaces it.
BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path = [path for path in sys.path if os.path.abspath(path) != BENCHMARKS]
sys.path.insert(0, os.path.dirname(BENCHMARKS))

import keras  # noqa: E402
import numpy as np  # noqa: E402

try:
    from mnist1d import data as mnist1d_data  # noqa: E402
except ImportError as error:
    raise SystemExit(
        "This benchmark needs the mnist1d package: pip install "
        "kerasdistill[benchmarks] (or pip install mnist1d)."
    ) from error

import kerasdistill  # noqa: E402

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# The recipe of the mnist1d repository's notebooks/train.py.
BATCH_SIZE, LEARNING_RATE, EPOCHS = 100, 1e-2, 150
TEMPERATURE, ALPHA = 4.0, 0.5
PUBLISHED = {"MLP": 0.68, "CNN": 0.94}
UNLABELED_SIZES, QUICK_SIZES = (4_000, 16_000, 64_000), (1_000, 4_000)
# The published split is generated with seed 42; unlabeled draws use
# UNLABELED_SEED + the run's seed.
UNLABELED_SEED = 1_000
PLOT = os.path.join(os.path.dirname(BENCHMARKS), "docs", "images", "mnist1d.png")

TEACHER, LABELS_ONLY = "CNN teacher, labels", "MLP, labels only (fair baseline)"
OURS_SAME, KERAS_SAME = (
    "kerasdistill KD, same labels (alpha 0.5)",
    "keras.distillation KD, same labels (alpha 0.5)",
)
TRANSFER = "kerasdistill KD, transfer set (a)"
ONE_FIT = "kerasdistill KD, labels + unlabeled in one fit (b)"
KERAS_TRANSFER = "keras.distillation KD, transfer set (a)"
ROW_ORDER = (
    TEACHER,
    LABELS_ONLY,
    OURS_SAME,
    KERAS_SAME,
    TRANSFER,
    ONE_FIT,
    KERAS_TRANSFER,
)


def published_split():
    """The published MNIST-1D split: 4,000 training and 1,000 test signals.

    Returns:
        A dict with float32 `x` (4000, 40) and `x_test` (1000, 40), int
        `y` and `y_test`.
    """
    data = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
    return {
        "x": data["x"].astype("float32"),
        "y": data["y"].astype("int32"),
        "x_test": data["x_test"].astype("float32"),
        "y_test": data["y_test"].astype("int32"),
    }


def unlabeled_inputs(count, seed):
    """`count` more signals from the MNIST-1D generator, without labels."""
    args = mnist1d_data.get_dataset_args()
    args.num_samples, args.seed, args.train_split = count, seed, 1.0
    return mnist1d_data.make_dataset(args)["x"].astype("float32")


def mlp():
    """The repository's MLPBase: 40 -> 100 -> (+ residual 100) -> 10."""
    inputs = keras.Input((40,), name="signal")
    hidden = keras.layers.Dense(100, activation="relu", name="dense1")(inputs)
    residual = keras.layers.Dense(100, activation="relu", name="dense2")(hidden)
    hidden = keras.layers.Add(name="residual")([hidden, residual])
    outputs = keras.layers.Dense(10, name="logits")(hidden)
    return keras.Model(inputs, outputs, name="mlp")


def cnn():
    """The repository's ConvBase: three stride-2 convolutions of 25
    channels (kernels 5, 3, 3; padding 1), then a linear layer."""
    inputs = keras.Input((40,), name="signal")
    hidden = keras.layers.Reshape((40, 1))(inputs)
    for i, kernel in enumerate((5, 3, 3)):
        hidden = keras.layers.ZeroPadding1D(1)(hidden)
        hidden = keras.layers.Conv1D(
            25, kernel, strides=2, activation="relu", name=f"conv{i + 1}"
        )(hidden)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs, name="cnn")


def adam():
    return keras.optimizers.Adam(LEARNING_RATE)


def accuracy(model, data):
    logits = model.predict(data["x_test"], batch_size=1_000, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == data["y_test"]))


def logits_loss():
    return kerasdistill.LogitsDistillation(TEMPERATURE)


def keras_logits_loss():
    """`keras.distillation`'s logits loss, with the loss object it needs."""
    return keras.distillation.LogitsDistillation(
        TEMPERATURE, loss=keras.losses.KLDivergence()
    )


def one_fit_dataset(data, x_unlabeled):
    """The labeled and unlabeled inputs in one dataset, labeled samples in
    proportion to their share of the inputs."""
    labeled = len(data["x"])
    return kerasdistill.data.labeled_and_unlabeled(
        labeled=(data["x"], data["y"]),
        unlabeled=x_unlabeled,
        labeled_fraction=labeled / (labeled + len(x_unlabeled)),
        batch_size=BATCH_SIZE,
    )


class Students:
    """Trains students from one set of initial weights, for one seed."""

    def __init__(self, teacher, data, epochs):
        self.teacher, self.data, self.epochs = teacher, data, epochs
        self.initial = mlp()

    def fresh(self):
        model = keras.models.clone_model(self.initial)
        model.set_weights(self.initial.get_weights())
        return model

    def labels_only(self):
        model = self.fresh()
        model.compile(adam(), SPARSE_CE)
        model.fit(
            self.data["x"],
            self.data["y"],
            batch_size=BATCH_SIZE,
            epochs=self.epochs,
            verbose=0,
        )
        return accuracy(model, self.data)

    def ours(self, train_data, alpha):
        """kerasdistill on `train_data`: arrays (the teacher's outputs are
        computed once, as nothing is augmented) or a dataset."""
        model = self.fresh()
        distiller = kerasdistill.Distiller(
            self.teacher, model, logits_loss(), student_loss_weight=alpha
        )
        distiller.compile(adam(), SPARSE_CE)
        if not hasattr(train_data, "element_spec"):
            train_data = kerasdistill.cache_teacher_outputs(
                self.teacher,
                train_data,
                distiller.distillation_losses,
                batch_size=BATCH_SIZE,
            )
        distiller.fit(train_data, epochs=self.epochs, verbose=0)
        return accuracy(model, self.data)

    def theirs(self, x, y, alpha):
        """`keras.distillation` on the same job; its teacher runs each step."""
        model = self.fresh()
        distiller = keras.distillation.Distiller(
            self.teacher, model, keras_logits_loss(), student_loss_weight=alpha
        )
        distiller.compile(adam(), loss=SPARSE_CE)
        distiller.fit(x, y, batch_size=BATCH_SIZE, epochs=self.epochs, verbose=0)
        return accuracy(model, self.data)


def run_seed(seed, data, sizes, epochs):
    """Returns {(row, N): test accuracy} for one seed; N is 0 for the rows
    without unlabeled inputs."""
    keras.utils.set_random_seed(seed)
    teacher = cnn()
    teacher.compile(adam(), SPARSE_CE)
    teacher.fit(data["x"], data["y"], batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0)
    results = {(TEACHER, 0): accuracy(teacher, data)}

    keras.utils.set_random_seed(seed)
    students = Students(teacher, data, epochs)
    labeled = (data["x"], data["y"])
    results[(LABELS_ONLY, 0)] = students.labels_only()
    results[(OURS_SAME, 0)] = students.ours(labeled, ALPHA)
    results[(KERAS_SAME, 0)] = students.theirs(*labeled, ALPHA)

    pool = unlabeled_inputs(max(sizes), UNLABELED_SEED + seed)
    for size in sizes:
        x_unlabeled = pool[:size]  # the draw is shuffled: a random subset
        transfer_set = np.concatenate([data["x"], x_unlabeled])
        results[(TRANSFER, size)] = students.ours(transfer_set, 0.0)
        results[(ONE_FIT, size)] = students.ours(
            one_fit_dataset(data, x_unlabeled), ALPHA
        )
        if size == max(sizes):
            results[(KERAS_TRANSFER, size)] = students.theirs(transfer_set, None, 0.0)
    return results, teacher.count_params(), students.initial.count_params()


def mean_std(values):
    return float(np.mean(values)), float(np.std(values))


def gap_closed(values, rows):
    """`(acc - label-only) / (teacher - label-only)`, on the means."""
    baseline = np.mean(rows[(LABELS_ONLY, 0)])
    return (np.mean(values) - baseline) / (np.mean(rows[(TEACHER, 0)]) - baseline)


def markdown_table(rows):
    """The results as a Markdown table, one line per (row, N)."""
    lines = [
        "| model | unlabeled inputs N | test accuracy | gap closed |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, size in sorted(rows, key=lambda key: (ROW_ORDER.index(key[0]), key[1])):
        values = rows[(name, size)]
        mean, std = mean_std(values)
        gap = "" if name == TEACHER else f"{gap_closed(values, rows):.0%}"
        lines.append(
            f"| {name} | {size:,} | {100 * mean:.2f} +- {100 * std:.2f} | {gap} |"
        )
    return "\n".join(lines)


def reproduction_table(rows, epochs):
    """The published baselines against the measured ones (the MLP is the
    label-only student, trained for `epochs`)."""
    lines = [
        "| model | epochs | published | measured | difference |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for model, row, trained in (("MLP", LABELS_ONLY, epochs), ("CNN", TEACHER, EPOCHS)):
        mean, std = mean_std(rows[(row, 0)])
        lines.append(
            f"| {model} | {trained} | {100 * PUBLISHED[model]:.0f} | {100 * mean:.2f} "
            f"+- {100 * std:.2f} | {100 * (mean - PUBLISHED[model]):+.2f} points |"
        )
    return "\n".join(lines)


def plot(rows, sizes, path):
    """Accuracy against N (log x axis), with the teacher and the label-only
    student as horizontal bands (mean +- std)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9.6, 4.2))
    for name, color in ((TEACHER, "tab:blue"), (LABELS_ONLY, "tab:gray")):
        mean, std = mean_std(rows[(name, 0)])
        axes.axhline(100 * mean, color=color, linestyle="--", label=name)
        axes.axhspan(100 * (mean - std), 100 * (mean + std), color=color, alpha=0.15)
    for name, color, marker in (
        (TRANSFER, "tab:green", "o"),
        (ONE_FIT, "tab:orange", "s"),
        (KERAS_TRANSFER, "tab:red", "^"),
    ):
        points = [
            (size, *mean_std(rows[(name, size)]))
            for size in sizes
            if (name, size) in rows
        ]
        if points:
            x, mean, std = (np.array(column) for column in zip(*points))
            axes.errorbar(
                x,
                100 * mean,
                100 * std,
                color=color,
                marker=marker,
                capsize=3,
                label=name,
            )
    axes.set_xscale("log")
    axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
    axes.minorticks_off()
    axes.set_xlabel("unlabeled inputs N (besides the 4,000 labeled ones)")
    axes.set_ylabel("test accuracy (%)")
    seeds = len(rows[(TEACHER, 0)])
    axes.set_title(
        f"MNIST-1D: CNN -> MLP distillation, mean +- std over {seeds} seed(s)"
    )
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(alpha=0.3)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], parents=[BACKEND_PARSER]
    )
    parser.add_argument("--seeds", type=int, default=None, help="default 5")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs of every student row (default {EPOCHS}; the teacher "
        f"always trains {EPOCHS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one seed, N in 1,000 and 4,000, 10 epochs, no plot",
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(size) for size in text.split(",")),
        default=None,
        help="unlabeled sizes N, comma-separated (default "
        f"{','.join(map(str, UNLABELED_SIZES))}); keras.distillation runs at the "
        "largest",
    )
    parser.add_argument(
        "--plot",
        default=None,
        help=f"PNG to write (default {PLOT}; none with --quick or --sizes)",
    )
    args = parser.parse_args()
    seeds = args.seeds or (1 if args.quick else 5)
    epochs = args.epochs or (10 if args.quick else EPOCHS)
    sizes = args.sizes or (QUICK_SIZES if args.quick else UNLABELED_SIZES)
    plot_path = args.plot or (None if args.quick or args.sizes else PLOT)

    start = time.perf_counter()
    print(
        f"backend {keras.backend.backend()} (--backend or KERAS_BACKEND), "
        f"keras {keras.__version__}, kerasdistill {kerasdistill.__version__}"
    )
    data = published_split()
    rows = {}
    for seed in range(seeds):
        results, teacher_params, student_params = run_seed(seed, data, sizes, epochs)
        for key, value in results.items():
            rows.setdefault(key, []).append(value)
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(
        f"Published baselines (mnist1d README, {EPOCHS} epochs) against this "
        f"run: test accuracy (%) after the last epoch, mean +- std over {seeds} "
        "seeds"
    )
    print()
    print(reproduction_table(rows, epochs))
    print()
    print(
        f"MNIST-1D: CNN teacher ({teacher_params:,} params) -> MLP student "
        f"({student_params:,} params); 4,000 labeled signals + N unlabeled; "
        f"every student {epochs} epochs of its training inputs, Adam "
        f"{LEARNING_RATE:g}, batch {BATCH_SIZE}, temperature {TEMPERATURE:g}; "
        f"test accuracy (%) after the last epoch, mean +- std over {seeds} seeds"
    )
    print()
    print(markdown_table(rows))
    print()
    if plot_path:
        plot(rows, sizes, plot_path)
        print(f"plot: {plot_path}")
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
