"""Speed benchmark: kerasdistill's distillation epoch against its floor,
against `keras.distillation`, and with cached teacher outputs (CPU).

Everything is measured in one run, on the same data and models: a teacher
MLP about 20x the student's parameters, on 10,000 generated samples
(scikit-learn's `make_classification`). The configurations are timed in
rounds, one epoch of each per round (each `fit` call runs one epoch), so
that a slow spell of a shared machine hits all of them alike; the first
round (tracing) is left out; a time is the median over rounds and a ratio
the median of the per-round ratios. Ratios are given for wall-clock time
(what a user waits) and for the process's CPU time (all its threads), which
other jobs on a shared machine disturb less.

Peak memory is the peak resident set size of a fresh process that trains
for two epochs (one process per configuration).

The backend table runs the same distillation jobs (logits; logits + a tap)
under each Keras backend, one fresh process per backend, in rounds as
above: ours / `keras.distillation` is a ratio within each backend's run, and
each backend's epoch time relative to TensorFlow's compares the medians of
the runs. Two floors bound a cached-teacher epoch from below: a plain Keras
model trained on the same KD objective from precomputed logits (the loss's
own operations), and a Keras model that wraps the student and overrides
`compute_loss` with that objective, as any Distiller built the Keras way
does (keras.distillation too), with no logs of its own.

    python benchmarks/speed.py            # 4-6 minutes on 2 CPU cores
    python benchmarks/speed.py --backends jax,torch --skip-main
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras warns that fit(shuffle=True) is ignored for any tf.data.Dataset; the
# cached datasets reshuffle themselves at each epoch.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kerasdistill  # noqa: E402

SAMPLES, FEATURES, CLASSES, BATCH_SIZE, TEMPERATURE = 10_000, 64, 10, 64, 4.0
SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_data(seed=0):
    x, y = make_classification(
        n_samples=SAMPLES,
        n_features=FEATURES,
        n_informative=32,
        n_classes=CLASSES,
        random_state=seed,
    )
    return x.astype("float32"), y.astype("int32")


def mlp(widths, name):
    """An MLP whose last hidden layer is `{name}_hidden`."""
    inputs = keras.Input((FEATURES,), name=f"{name}_input")
    hidden = inputs
    for i, width in enumerate(widths):
        layer_name = f"{name}_hidden" if i == len(widths) - 1 else f"{name}_dense{i}"
        hidden = keras.layers.Dense(width, activation="relu", name=layer_name)(hidden)
    outputs = keras.layers.Dense(CLASSES, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def make_models():
    keras.utils.set_random_seed(0)
    teacher = mlp([1024, 832, 128], "teacher")
    student = mlp([256, 128], "student")
    return teacher, student


def feature_loss(module):
    return module.FeatureDistillation(
        loss="mse",
        teacher_layer_name="teacher_hidden",
        student_layer_name="student_hidden",
    )


def distillers(teacher, student):
    """The distillers to time, each with its own copy of the student."""

    def fresh():
        return keras.models.clone_model(student)

    theirs_logits = keras.distillation.LogitsDistillation(
        temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
    )
    built = {
        "ours, logits": kerasdistill.Distiller(
            teacher, fresh(), kerasdistill.LogitsDistillation(TEMPERATURE)
        ),
        "keras.distillation, logits": keras.distillation.Distiller(
            teacher, fresh(), theirs_logits
        ),
        "ours, logits + feature": kerasdistill.Distiller(
            teacher,
            fresh(),
            [kerasdistill.LogitsDistillation(TEMPERATURE), feature_loss(kerasdistill)],
        ),
        "keras.distillation, logits + feature": keras.distillation.Distiller(
            teacher, fresh(), [theirs_logits, feature_loss(keras.distillation)]
        ),
        "ours, logits, cached teacher": kerasdistill.Distiller(
            teacher, fresh(), kerasdistill.LogitsDistillation(TEMPERATURE)
        ),
        "ours, logits + feature, cached teacher": kerasdistill.Distiller(
            teacher,
            fresh(),
            [kerasdistill.LogitsDistillation(TEMPERATURE), feature_loss(kerasdistill)],
        ),
    }
    for distiller in built.values():
        distiller.compile(keras.optimizers.Adam(1e-3), SPARSE_CE)
    return built


def clocks():
    """Wall-clock and process CPU time (all threads), in seconds."""
    return np.array([time.perf_counter(), time.process_time()])


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = clocks()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = clocks() - self.start


def time_epoch(model, *fit_args, **fit_kwargs):
    timer = EpochTimer()
    model.fit(*fit_args, epochs=1, verbose=0, callbacks=[timer], **fit_kwargs)
    return timer.seconds


def time_predict(teacher, x):
    start = clocks()
    teacher.predict(x, batch_size=BATCH_SIZE, verbose=0)
    return clocks() - start


def directory_size(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def measure_speed(rounds):
    x, y = make_data()
    teacher, student = make_models()
    built = distillers(teacher, student)
    baseline = keras.models.clone_model(student)
    baseline.compile(keras.optimizers.Adam(1e-3), SPARSE_CE)
    losses = built["ours, logits, cached teacher"].distillation_losses

    start = time.perf_counter()  # one teacher pass, timed
    kerasdistill.cache_teacher_outputs(teacher, (x, y), losses, batch_size=BATCH_SIZE)
    build_seconds = time.perf_counter() - start
    caches = {  # each cached distiller's own: the taps differ
        name: kerasdistill.cache_teacher_outputs(
            teacher, (x, y), distiller.distillation_losses, batch_size=BATCH_SIZE
        )
        for name, distiller in built.items()
        if "cached" in name
    }
    cache_dir = tempfile.mkdtemp(prefix="kerasdistill_speed_")
    kerasdistill.cache_teacher_outputs(
        teacher,
        (x, y),
        losses,
        batch_size=BATCH_SIZE,
        path=os.path.join(cache_dir, "cache"),
    )
    disk_bytes = directory_size(os.path.join(cache_dir, "cache"))
    shutil.rmtree(cache_dir)

    times = {name: [] for name in ["student only", "teacher predict", *built]}
    for _ in range(rounds):
        times["student only"].append(time_epoch(baseline, x, y, batch_size=BATCH_SIZE))
        times["teacher predict"].append(time_predict(teacher, x))
        for name, distiller in built.items():
            if "cached" in name:
                times[name].append(time_epoch(distiller, caches[name]))
            else:
                times[name].append(time_epoch(distiller, x, y, batch_size=BATCH_SIZE))
    # Warm-up round out; [round, clock] with clock 0 wall time, 1 CPU time.
    times = {name: np.array(values[1:]) for name, values in times.items()}
    return {
        "times": times,
        "teacher_params": teacher.count_params(),
        "student_params": student.count_params(),
        "build_seconds": build_seconds,
        "disk_bytes_per_10k": disk_bytes * 10_000 / SAMPLES,
        "rounds": rounds - 1,
    }


def ratios(times, numerator, *denominators):
    """Median over rounds of the per-round ratio: (wall, CPU)."""
    per_round = times[numerator] / sum(times[name] for name in denominators)
    return np.median(per_round, axis=0)


def memory_probe(which):
    """Trains for two epochs in this fresh process and prints peak RSS (MB)."""
    x, y = make_data()
    teacher, student = make_models()
    if which == "student":
        model = student
    else:
        model = kerasdistill.Distiller(
            teacher, student, kerasdistill.LogitsDistillation(TEMPERATURE)
        )
    model.compile(keras.optimizers.Adam(1e-3), SPARSE_CE)
    if which == "cached":
        data = kerasdistill.cache_teacher_outputs(
            teacher, (x, y), model.distillation_losses, batch_size=BATCH_SIZE
        )
        model.fit(data, epochs=2, verbose=0)
    else:
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=2, verbose=0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_rss_mb(which):
    output = subprocess.run(
        [sys.executable, __file__, "--memory-probe", which],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(output.strip().splitlines()[-1])


RATIOS = [
    (
        "floor: ours, logits / (teacher predict + student only)",
        ("ours, logits", "teacher predict", "student only"),
        "<= 1.05",
    ),
    (
        "ours / keras.distillation, logits",
        ("ours, logits", "keras.distillation, logits"),
        "",
    ),
    (
        "ours / keras.distillation, logits + feature",
        ("ours, logits + feature", "keras.distillation, logits + feature"),
        "",
    ),
    (
        "cached: ours, cached teacher / student only",
        ("ours, logits, cached teacher", "student only"),
        "<= 1.15",
    ),
    (
        "ours, cached teacher / ours, logits",
        ("ours, logits, cached teacher", "ours, logits"),
        "",
    ),
]


# A plain Keras model (no Distiller) trained on the same objective from the
# teacher's logits computed once: the cost of the KD loss's own operations
# in each backend's training loop, the floor of a cached-teacher epoch.
PLAIN_KERAS_KD = "plain Keras, KD loss on precomputed logits"
# The least a Distiller built the Keras way (a model that wraps the student
# and overrides `compute_loss`, as keras.distillation does) pays per step.
WRAPPED_KD = "Keras model wrapping the student, same KD loss"
FLOORS = (PLAIN_KERAS_KD, WRAPPED_KD)

BACKEND_JOBS = (
    "student only",
    *FLOORS,
    "ours, logits",
    "keras.distillation, logits",
    "ours, logits + feature",
    "keras.distillation, logits + feature",
    "ours, logits, cached teacher",
    "ours, logits + feature, cached teacher",
)


def kd_objective(labels, teacher_logits, student_logits):
    """The Distiller's default objective per sample, `0.5 * CE(labels) +
    0.5 * T^2 * KL(teacher || student)` at temperature T."""
    teacher = keras.ops.log_softmax(teacher_logits / TEMPERATURE, axis=-1)
    student = keras.ops.log_softmax(student_logits / TEMPERATURE, axis=-1)
    kl = keras.ops.sum(keras.ops.exp(teacher) * (teacher - student), axis=-1) * (
        TEMPERATURE**2
    )
    cross_entropy = keras.losses.sparse_categorical_crossentropy(
        labels, student_logits, from_logits=True
    )
    return 0.5 * cross_entropy + 0.5 * kl


class PackedKD(keras.losses.Loss):
    """`kd_objective` for a plain Keras model whose `y` packs each sample's
    label and the teacher's logits: `[label, logit_1, ..., logit_C]`."""

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(y_true[:, 0], "int32")
        return kd_objective(labels, y_true[:, 1:], y_pred)


class WrappedKD(keras.Model):
    """A model that wraps `student` and trains it on `kd_objective`, the
    teacher's logits read from the inputs `{"inputs", "teacher_logits"}`;
    Keras's own loss tracker is its only log."""

    def __init__(self, student):
        super().__init__()
        self.student = student

    def call(self, inputs, training=None):
        return self.student(inputs["inputs"], training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **_):
        return keras.ops.mean(kd_objective(y, x["teacher_logits"], y_pred))


def backend_probe(rounds):
    """Times the backend jobs under this process's backend; prints JSON."""
    x, y = make_data()
    teacher, student = make_models()
    built = distillers(teacher, student)
    baseline = keras.models.clone_model(student)
    baseline.compile(keras.optimizers.Adam(1e-3), SPARSE_CE)
    plain = keras.models.clone_model(student)
    plain.compile(keras.optimizers.Adam(1e-3), PackedKD())
    wrapped = WrappedKD(keras.models.clone_model(student))
    wrapped.compile(keras.optimizers.Adam(1e-3))
    logits = teacher.predict(x, verbose=0)
    packed = np.concatenate([y[:, None].astype("float32"), logits], axis=1)
    models = {"student only": baseline, PLAIN_KERAS_KD: plain, WRAPPED_KD: wrapped}
    models.update(built)
    floor_data = {
        PLAIN_KERAS_KD: (x, packed),
        WRAPPED_KD: ({"inputs": x, "teacher_logits": logits}, y),
    }
    data = {
        name: (
            (
                kerasdistill.cache_teacher_outputs(
                    teacher, (x, y), models[name].distillation_losses, BATCH_SIZE
                ),
            ),
            {},
        )
        if "cached" in name
        else (floor_data.get(name, (x, y)), {"batch_size": BATCH_SIZE})
        for name in BACKEND_JOBS
    }
    times = {name: [] for name in BACKEND_JOBS}
    for _ in range(rounds):
        for name in BACKEND_JOBS:
            args, kwargs = data[name]
            times[name].append(time_epoch(models[name], *args, **kwargs))
    print(
        json.dumps(
            {name: values[1:] for name, values in times.items()},
            default=lambda a: a.tolist(),
        )
    )


def backend_times(backend, rounds):
    env = dict(os.environ, KERAS_BACKEND=backend)
    output = subprocess.run(
        [sys.executable, __file__, "--backend-probe", "--rounds", str(rounds)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return {
        name: np.array(values)
        for name, values in json.loads(output.strip().splitlines()[-1]).items()
    }


def backend_report(per_backend):
    reference = per_backend.get("tensorflow")
    lines = [
        "",
        "by backend (one fresh process each)                 epoch wall (s)   "
        "ours / keras.distillation   "
        "epoch / TensorFlow's   cached (or floor) / student only",
        f"{'backend, job':<52} {'median':>7}   {'wall':>6} {'CPU':>6}   {'':>10}"
        f"   {'wall':>6} {'CPU':>6}",
    ]
    for backend, times in per_backend.items():
        for job in (
            "ours, logits",
            "ours, logits + feature",
            *FLOORS,
            "student only",
        ):
            wall = np.median(times[job][:, 0])
            theirs = job.replace("ours", "keras.distillation")
            ratio = (
                ""
                if theirs == job
                else "{:>6.3f} {:>6.3f}".format(*ratios(times, job, theirs))
            )
            relative = (
                wall / np.median(reference[job][:, 0])
                if reference is not None
                else np.nan
            )
            cached = job if job in FLOORS else f"{job}, cached teacher"
            cached_ratio = (
                "{:>6.3f} {:>6.3f}".format(*ratios(times, cached, "student only"))
                if cached in times
                else ""
            )
            lines.append(
                f"{backend + ', ' + job:<52} {wall:>7.3f}   {ratio:>13}   "
                f"{relative:>10.3f}   {cached_ratio:>13}"
            )
    return "\n".join(lines)


def report(results, memory):
    times = results["times"]
    lines = [
        f"teacher {results['teacher_params']:,} params, student "
        f"{results['student_params']:,} params "
        f"({results['teacher_params'] / results['student_params']:.1f}x); "
        f"{SAMPLES:,} samples, batch {BATCH_SIZE}; {results['rounds']} "
        "epochs each after one warm-up round",
        "",
        f"{'epoch time, wall clock (s)':<40} {'median':>7} {'min':>7} {'max':>7} {'CPU':>7}",
    ]
    for name, values in times.items():
        wall = values[:, 0]
        lines.append(
            f"{name:<40} {np.median(wall):>7.3f} {wall.min():>7.3f} "
            f"{wall.max():>7.3f} {np.median(values[:, 1]):>7.3f}"
        )
    lines += [
        f"{'building the cache (one teacher pass)':<40} {results['build_seconds']:>7.3f}",
        "",
        f"{'ratio, median of per-round ratios':<56} {'wall':>6} {'CPU':>6}  target",
    ]
    for label, (numerator, *denominators), target in RATIOS:
        wall, cpu = ratios(times, numerator, *denominators)
        lines.append(f"{label:<56} {wall:>6.3f} {cpu:>6.3f}  {target}")
    lines += [
        "",
        f"{'peak RSS, 2 epochs, fresh process (MB)':<40} {'value':>7}",
    ]
    for name, megabytes in memory.items():
        lines.append(f"{name:<40} {megabytes:>7.0f}")
    lines += [
        f"{'distillation / student only':<40} "
        f"{memory['distillation'] / memory['student only']:>7.3f}",
        f"{'disk cache per 10,000 samples (MB)':<40} "
        f"{results['disk_bytes_per_10k'] / 1e6:>7.2f}",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="rounds of one epoch per configuration (first is warm-up)",
    )
    parser.add_argument(
        "--backends",
        default="tensorflow,jax,torch",
        help="comma-separated Keras backends for the backend table",
    )
    parser.add_argument(
        "--skip-main", action="store_true", help="print only the backend table"
    )
    parser.add_argument(
        "--memory-probe",
        choices=["student", "distillation", "cached"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--backend-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    if args.backend_probe:
        backend_probe(args.rounds)
        return
    if not args.skip_main:
        memory = {
            "student only": peak_rss_mb("student"),
            "distillation": peak_rss_mb("distillation"),
            "distillation, cached teacher": peak_rss_mb("cached"),
        }
        print(report(measure_speed(args.rounds), memory), flush=True)
    per_backend = {
        backend: backend_times(backend, args.rounds)
        for backend in args.backends.split(",")
        if backend
    }
    print(backend_report(per_backend))


if __name__ == "__main__":
    main()
