"""Runs a Distiller under `tf.distribute` for `tests/test_distribute.py`.

Logical devices and `TF_CONFIG` must be set before TensorFlow starts, so
each run is its own process, launched (with a timeout) by the tests:

    python distribute_runner.py mirrored OUT CASE...
        Configures 2 logical CPUs, then fits each case on one device and
        under `MirroredStrategy` (2 replicas, same global batch), and probes
        the compile options TensorFlow cannot distribute (`OUT/limits.json`).
    python distribute_runner.py worker OUT CASE [--backup-dir D]
            [--kill-at EPOCH:BATCH]
        One worker of a `MultiWorkerMirroredStrategy` cluster (`TF_CONFIG`
        set by the caller), with `BackupAndRestore` in `D/worker_<index>`.
        `--kill-at` makes the process SIGKILL itself after that batch, as a
        preempted machine dies.

Every run writes `OUT/<case>_<label>.npz`: the fit history (`history/KEY`),
the epochs run (`epochs`), the number of replicas, the Distiller's weights
after training (`weight_I`) and its predictions on the training inputs.

A case is a function `case(scope, teacher_scope) -> (distiller, fit_kwargs)`
that builds its models under the given scopes (a `strategy.scope()` or a
null context). To cover another trainer (SelfDistiller, cached teacher
outputs, schedule callbacks), add a function to `CASES` and its name to the
cases of `tests/test_distribute.py`.
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


class EpochSchedule(keras.callbacks.Callback):
    """Sets alpha and the temperature from the epoch number.

    Stands in for the schedule callbacks (they are written in another
    branch): a resumed run must continue the schedule, not restart it.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.student_loss_weight = ALPHAS[epoch]
        self.model.distillation_losses[0].temperature = TEMPERATURES[epoch]


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
        callbacks=[EpochSchedule()],
    )


def batch_mean_losses(scope, teacher_scope):
    """Losses that reduce to one value per batch with a plain mean: a
    `keras.distillation` loss and a `kerasdistill.DistillationLoss` whose
    `call` returns a scalar. Each must count once, not once per replica.
    Compiled outside the scope."""
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


CASES = {
    "logits_and_feature": logits_and_feature,
    "batch_mean_losses": batch_mean_losses,
}


def run_case(case, out, label, scope, teacher_scope=None, callbacks=()):
    distiller, fit_kwargs = CASES[case](
        scope, contextlib.nullcontext() if teacher_scope is None else teacher_scope
    )
    fit_kwargs["callbacks"] = fit_kwargs.get("callbacks", []) + list(callbacks)
    history = distiller.fit(
        batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0, **fit_kwargs
    )
    arrays = {f"history/{k}": np.asarray(v) for k, v in history.history.items()}
    arrays["predictions"] = distiller.predict(
        fit_kwargs["x"], batch_size=GLOBAL_BATCH, verbose=0
    )
    arrays["epochs"] = np.asarray(history.epoch)
    arrays["replicas"] = np.asarray(distiller.distribute_strategy.num_replicas_in_sync)
    for i, weight in enumerate(distiller.get_weights()):
        arrays[f"weight_{i}"] = weight
    np.savez(os.path.join(out, f"{case}_{label}.npz"), **arrays)
    return distiller


def mirrored(out, cases):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for case in cases:
        run_case(case, out, "one_device", contextlib.nullcontext())
        run_case(case, out, "mirrored", strategy.scope(), strategy.scope())
    # The teacher may be created outside the scope: it is only read.
    run_case(cases[0], out, "teacher_outside", strategy.scope())
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


def worker(out, case, backup_dir=None, kill_at=None):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    callbacks = []
    if backup_dir:  # one directory per worker: they must not share files
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
    distiller = run_case(
        case, out, f"worker_{task}", strategy.scope(), strategy.scope(), callbacks
    )
    with open(os.path.join(out, f"limits_worker_{task}.json"), "w") as f:
        json.dump(refusals(distiller), f)


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["mirrored", "worker"])
    parser.add_argument("out")
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    parser.add_argument("--backup-dir")
    parser.add_argument("--kill-at")
    args = parser.parse_args(argv)
    if args.mode == "mirrored":
        mirrored(args.out, args.cases)
    else:
        worker(args.out, args.cases[0], args.backup_dir, args.kill_at)


if __name__ == "__main__":
    main(sys.argv[1:])
