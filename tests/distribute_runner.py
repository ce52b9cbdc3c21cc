"""Runs a Distiller under `tf.distribute` for `tests/test_distribute.py`.

Logical devices and `TF_CONFIG` must be set before TensorFlow starts, so
each run is its own process, launched (with a timeout) by the tests:

    python distribute_runner.py mirrored OUT CASE...
        Configures 2 logical CPUs, then fits each case on one device and
        under `MirroredStrategy` (2 replicas, same global batch), and probes
        the compile options TensorFlow cannot distribute (`OUT/limits.json`).
    python distribute_runner.py worker OUT CASE... [--backup-dir D]
            [--kill-at EPOCH:BATCH]
        One worker of a `MultiWorkerMirroredStrategy` cluster (`TF_CONFIG`
        set by the caller) fitting each case in turn; with one case,
        `BackupAndRestore` in `D/worker_<index>`.
        `--kill-at` makes the process SIGKILL itself after that batch, as a
        preempted machine dies. `--shuffled-cache` also records the samples
        it reads from a shuffled cache of teacher outputs
        (`OUT/shuffled_cache_worker_<index>.json`).

Every run writes `OUT/<case>_<label>.npz`: the fit history (`history/KEY`),
the epochs run (`epochs`), the number of replicas, the Distiller's weights
after training (`weight_I`; the teacher's and the student's also apart, as
`teacher/I` and `student/I`), the largest difference between the copies of
a variable on this worker's replicas (`replica_spread`), whether the
teacher's variables are mirrored (`teacher_mirrored`) and the predictions on
the training inputs.

A case is a function `case(scope, teacher_scope) -> (distiller, fit_kwargs)`
that builds its models under the given scopes (a `strategy.scope()` or a
null context). To cover another trainer, add a function to `CASES` and its
name to the cases of `tests/test_distribute.py`.
"""

import argparse
import contextlib
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasdistill as kd  # noqa: E402

SAMPLES = 64  # 4 global batches, split evenly over the replicas
GLOBAL_BATCH = 16
EPOCHS = 3
# The values `schedule_callbacks()` sets at epochs 0, 1, 2.
ALPHAS = [0.2, 0.5, 0.8]
TEMPERATURES = [1.0, 2.0, 4.0]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 6)).astype("float32")
    y = np.argmax(x[:, :3] + 0.3 * x[:, 3:], axis=1).astype("int32")
    sample_weight = rng.uniform(0.2, 2.0, size=SAMPLES).astype("float32")
    return x, y, sample_weight


def _mlp(name, widths, classes=3, regularizer=None):
    """A functional MLP whose last hidden layer is `{name}_feat`."""
    inputs = keras.Input((6,), name=f"{name}_input")
    hidden = inputs
    for i, width in enumerate(widths):
        last = i == len(widths) - 1
        hidden = keras.layers.Dense(
            width,
            activation="relu",
            kernel_regularizer=regularizer,
            name=f"{name}_feat" if last else f"{name}_dense_{i}",
        )(hidden)
    outputs = keras.layers.Dense(classes, name=f"{name}_logits")(hidden)
    model = keras.Model(inputs, outputs, name=name)
    rng = np.random.default_rng(len(name))  # same weights in every process
    model.set_weights(
        [rng.normal(0.0, 0.4, w.shape).astype("float32") for w in model.get_weights()]
    )
    return model


def schedule_callbacks():
    """alpha and the temperature driven by the epoch index (`ALPHAS`,
    `TEMPERATURES`): a resumed run must continue them, not restart them."""
    return [  # alpha = 0.2 + 0.3 * epoch, temperature = 2 ** epoch
        kd.callbacks.AlphaScheduler(kd.schedules.Linear(0.2, 0.8, steps=2)),
        kd.callbacks.TemperatureScheduler(kd.schedules.ExponentialDecay(1.0, 2.0)),
    ]


def logits_and_feature(scope, teacher_scope):
    """Hinton KD + a FitNets hint on a tapped layer, sample weights, an L2
    regularized student, validation data and an alpha/temperature schedule."""
    with teacher_scope:
        teacher = _mlp("teacher", [16, 8])
    with scope:
        student = _mlp("student", [8], regularizer=keras.regularizers.L2(1e-3))
        distiller = kd.Distiller(
            teacher,
            student,
            [
                kd.LogitsDistillation(temperature=TEMPERATURES[0]),
                kd.FeatureDistillation("mse", "teacher_feat", "student_feat"),
            ],
            distillation_loss_weights=[1.0, 0.5],
            student_loss_weight=ALPHAS[0],
        )
        distiller.compile(
            keras.optimizers.SGD(0.1, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
        )
    x, y, sample_weight = _data()
    return distiller, dict(
        x=x,
        y=y,
        sample_weight=sample_weight,
        validation_data=(x, y),
        callbacks=schedule_callbacks(),
    )


def batch_mean_losses(scope, teacher_scope):
    """Losses that reduce to one value per batch with a plain mean: a
    `keras.distillation` loss and a `kerasdistill.DistillationLoss` whose
    `call` returns a scalar. Each must count once, not once per replica.
    Compiled outside the scope; `mirrored` creates its teacher outside the
    scope too."""

    class MeanGap(keras.distillation.DistillationLoss):
        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs))

    class MeanSquaredGap(kd.DistillationLoss):
        def call(self, teacher_outputs, student_outputs):
            return keras.ops.mean(keras.ops.square(teacher_outputs - student_outputs))

    with teacher_scope:
        teacher = _mlp("teacher", [16, 8])
    with scope:
        distiller = kd.Distiller(
            teacher, _mlp("student", [8]), [MeanGap(), MeanSquaredGap()]
        )
    distiller.compile(  # outside the scope: compile() enters the Distiller's
        {"class_name": "SGD", "config": {"learning_rate": 0.1, "momentum": 0.9}},
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y, _ = _data()
    return distiller, dict(x=x, y=y, validation_data=(x, y))


def self_distillation(teacher_type):
    """A case: `SelfDistiller` with Hinton KD + a hint from the teacher
    state's hidden layer, sample weights and an L2 regularized model. Its
    teacher is a copy of the model created with it: `"ema"` updates it
    inside the replicated train step, `"snapshot"` from a callback, with
    PS-KD's progressive alpha. (`teacher_scope` is not used: the teacher is
    created in `scope`, with the `SelfDistiller`.)"""
    options = (
        dict(ema_decay=0.9, student_loss_weight=0.4)
        if teacher_type == "ema"
        else dict(progressive_alpha=0.8)
    )

    def case(scope, teacher_scope):
        with scope:
            model = _mlp(
                f"self_{teacher_type}", [8], regularizer=keras.regularizers.L2(1e-3)
            )
            distiller = kd.SelfDistiller(
                model,
                teacher_type,
                [
                    kd.LogitsDistillation(temperature=2.0),
                    kd.FeatureDistillation(
                        "mse", f"self_{teacher_type}_feat", f"self_{teacher_type}_feat"
                    ),
                ],
                distillation_loss_weights=[1.0, 0.5],
                **options,
            )
            distiller.compile(
                keras.optimizers.SGD(0.1, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                weighted_metrics=["accuracy"],
            )
        x, y, sample_weight = _data()
        return distiller, dict(x=x, y=y, sample_weight=sample_weight)

    return case


def cached_teacher(scope, teacher_scope):
    """Hinton KD + a FitNets hint read from `cache_teacher_outputs` (built
    in the scope, with sample weights), for training and validation."""
    with teacher_scope:
        teacher = _mlp("teacher", [16, 8])
    with scope:
        losses = [
            kd.LogitsDistillation(temperature=2.0),
            kd.FeatureDistillation("mse", "teacher_feat", "student_feat"),
        ]
        distiller = kd.Distiller(
            teacher,
            _mlp("student", [8]),
            losses,
            distillation_loss_weights=[1.0, 0.5],
            student_loss_weight=0.3,
        )
        distiller.compile(
            keras.optimizers.SGD(0.1, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
        )
        cached = kd.cache_teacher_outputs(
            teacher, _data(), losses, batch_size=GLOBAL_BATCH, shuffle=False
        )
    return distiller, dict(x=cached, validation_data=cached)


def partial_labels(scope, teacher_scope):
    """Labeled and unlabeled samples in one fit (`kd.partial_labels`), with
    sample weights and validation data: the labeled samples are
    spread unevenly over the replicas (one global batch has none), so the
    student loss is the mean over the labeled samples of the global batch
    only if the replicas sum them before dividing."""
    with teacher_scope:
        teacher = _mlp("teacher", [16, 8])
    with scope:
        distiller = kd.Distiller(
            teacher,
            _mlp("student", [8]),
            kd.LogitsDistillation(temperature=2.0),
            student_loss_weight=0.5,
        )
        distiller.compile(
            keras.optimizers.SGD(0.1, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
        )
    x, y, sample_weight = _data()
    has_label = np.zeros(SAMPLES, "float32")
    has_label[:12] = 1.0  # batch 1: 12 of 16 labeled, 8 on the first replica
    has_label[40:42] = 1.0  # batch 3: 2 labeled, both on the first replica
    has_label[56:] = 1.0  # batch 4: 8 labeled, all on the second replica
    labels = kd.partial_labels(y, has_label)
    return distiller, dict(
        x=x,
        y=labels,
        sample_weight=sample_weight,
        validation_data=(x, labels),
    )


CASES = {
    "logits_and_feature": logits_and_feature,
    "batch_mean_losses": batch_mean_losses,
    "self_distillation_ema": self_distillation("ema"),
    "self_distillation_snapshot": self_distillation("snapshot"),
    "cached_teacher": cached_teacher,
    "partial_labels": partial_labels,
}


def run_case(case, out, label, scope, teacher_scope=None, callbacks=()):
    distiller, fit_kwargs = CASES[case](
        scope, contextlib.nullcontext() if teacher_scope is None else teacher_scope
    )
    fit_kwargs["callbacks"] = fit_kwargs.get("callbacks", []) + list(callbacks)
    # A cache of teacher outputs comes batched and in order.
    batching = (
        {}
        if isinstance(fit_kwargs["x"], kd.data.cached_batches.CachedTeacherOutputs)
        else dict(batch_size=GLOBAL_BATCH)
    )
    history = distiller.fit(
        epochs=EPOCHS, shuffle=False, verbose=0, **batching, **fit_kwargs
    )
    arrays = {f"history/{k}": np.asarray(v) for k, v in history.history.items()}
    arrays["predictions"] = distiller.predict(fit_kwargs["x"], verbose=0, **batching)
    arrays["epochs"] = np.asarray(history.epoch)
    arrays["replicas"] = np.asarray(distiller.distribute_strategy.num_replicas_in_sync)
    for i, weight in enumerate(distiller.get_weights()):
        arrays[f"weight_{i}"] = weight
    for i, weight in enumerate(distiller.teacher.get_weights()):
        arrays[f"teacher/{i}"] = weight
    for i, weight in enumerate(distiller.student.get_weights()):
        arrays[f"student/{i}"] = weight
    arrays["replica_spread"] = np.asarray(replica_spread(distiller))
    arrays["teacher_mirrored"] = np.asarray(
        any(
            isinstance(v.value, tf.distribute.DistributedValues)
            for v in distiller.teacher.variables
        )
    )
    np.savez(os.path.join(out, f"{case}_{label}.npz"), **arrays)
    return distiller


def replica_spread(distiller):
    """The largest gap between a variable's copy on one replica of this
    worker and its copy on the first (0 when every copy is the same)."""
    strategy = distiller.distribute_strategy
    spread = 0.0
    for variable in distiller.variables + distiller.optimizer.variables:
        copies = [
            np.asarray(c) for c in strategy.experimental_local_results(variable.value)
        ]
        spread = max(
            [spread]
            + [float(np.max(np.abs(c - copies[0]), initial=0.0)) for c in copies[1:]]
        )
    return spread


TEACHER_OUTSIDE = "batch_mean_losses"


def mirrored(out, cases):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for case in cases:
        run_case(case, out, "one_device", contextlib.nullcontext())
        # The teacher may be created outside the scope (it is only read):
        # one case does so, the others create it inside.
        teacher_scope = None if case == TEACHER_OUTSIDE else strategy.scope()
        run_case(case, out, "mirrored", strategy.scope(), teacher_scope)
    with open(os.path.join(out, "limits.json"), "w") as f:
        json.dump(probe_limits(strategy), f)


OPTIONS = {"jit_compile": True, "steps_per_execution": 2}


def probe_limits(strategy):
    """The compile options that TensorFlow cannot run on several replicas:
    what a plain Keras model does with them, and what the Distiller says."""
    x, y, _ = _data()
    found = {}
    for option, value in OPTIONS.items():
        with strategy.scope():
            model = _mlp("plain", [8])
            model.compile(
                "sgd",
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                **{option: value},
            )
        found[f"keras_{option}"] = _error_of(
            lambda: model.fit(x, y, batch_size=GLOBAL_BATCH, verbose=0)
        )
    with strategy.scope():
        distiller = kd.Distiller(
            _mlp("teacher", [16, 8]), _mlp("student", [8]), kd.LogitsDistillation()
        )
    found.update(refusals(distiller))
    return found


def refusals(distiller):
    """What `compile()` says to each option of `OPTIONS`."""
    return {
        f"distiller_{option}": _error_of(
            lambda: distiller.compile("sgd", "mse", **{option: value})
        )
        for option, value in OPTIONS.items()
    }


def _error_of(function):
    try:
        function()
    except Exception as error:  # noqa: BLE001 - reported to the test
        return {"type": type(error).__name__, "message": str(error)}
    return None


def shuffled_cache_order(strategy, epochs=2):
    """The sample indices that this worker's replicas read, epoch by epoch,
    from a shuffled `cache_teacher_outputs` dataset distributed as `fit()`
    distributes it, with the same seed set on every worker."""
    keras.utils.set_random_seed(1)
    x, y, _ = _data()
    teacher = _mlp("teacher", [16, 8])
    cached = kd.cache_teacher_outputs(teacher, (x, y), batch_size=GLOBAL_BATCH)
    rows = {row.tobytes(): i for i, row in enumerate(x)}  # a sample's index
    dataset = strategy.experimental_distribute_dataset(cached.as_dataset())
    return [
        [
            rows[row.tobytes()]
            for cached_x, _ in dataset
            for inputs in strategy.experimental_local_results(cached_x["inputs"])
            for row in np.asarray(inputs)
        ]
        for _ in range(epochs)
    ]


def worker(out, cases, backup_dir=None, kill_at=None, shuffled_cache=False):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    callbacks = []
    if backup_dir:  # one directory per worker: they must not share files
        if len(cases) > 1:
            raise ValueError(f"--backup-dir takes one case. Received: {cases}")
        callbacks.append(
            keras.callbacks.BackupAndRestore(os.path.join(backup_dir, f"worker_{task}"))
        )
    if kill_at:
        epoch, batch = (int(i) for i in kill_at.split(":"))

        class Preempted(keras.callbacks.Callback):
            def on_epoch_begin(self, current, logs=None):
                self.epoch = current

            def on_train_batch_end(self, current, logs=None):
                if (self.epoch, current) == (epoch, batch):
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(Preempted())
    for case in cases:  # one after the other, on the same cluster
        distiller = run_case(
            case, out, f"worker_{task}", strategy.scope(), strategy.scope(), callbacks
        )
    with open(os.path.join(out, f"limits_worker_{task}.json"), "w") as f:
        json.dump(refusals(distiller), f)
    if shuffled_cache:
        with open(os.path.join(out, f"shuffled_cache_worker_{task}.json"), "w") as f:
            json.dump(shuffled_cache_order(strategy), f)


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["mirrored", "worker"])
    parser.add_argument("out")
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    parser.add_argument("--backup-dir")
    parser.add_argument("--kill-at")
    parser.add_argument("--shuffled-cache", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "mirrored":
        mirrored(args.out, args.cases)
    else:
        worker(args.out, args.cases, args.backup_dir, args.kill_at, args.shuffled_cache)


if __name__ == "__main__":
    main(sys.argv[1:])
