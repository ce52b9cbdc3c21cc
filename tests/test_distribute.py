"""The Distiller under tf.distribute: MirroredStrategy on 2 logical CPUs and
MultiWorkerMirroredStrategy with 2 local workers match one device (the
Distiller, the SelfDistiller's EMA and snapshot teachers, cached teacher
outputs, labeled and unlabeled samples in one fit); a killed worker resumes from BackupAndRestore and continues the
alpha/temperature schedule callbacks; misplaced scopes and options
TensorFlow cannot distribute are refused clearly.

The distributed runs are processes (`distribute_runner.py`), launched with a
timeout and always killed on the way out.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_classifier
from distribute_runner import ALPHAS
from distribute_runner import SAMPLES
from distribute_runner import TEACHER_OUTSIDE
from distribute_runner import TEMPERATURES

import kerasdistill as kd

RUNNER = Path(__file__).with_name("distribute_runner.py")
ROOT = RUNNER.parent.parent
# Cases of distribute_runner.CASES. Each adds a few seconds to one process.
MIRRORED_CASES = [
    "logits_and_feature",
    "batch_mean_losses",
    "self_distillation_ema",
    "self_distillation_snapshot",
    "cached_teacher",
    "partial_labels",
]
MULTI_WORKER_CASES = ["logits_and_feature", "cached_teacher"]
FAULT_TOLERANCE_CASE = "logits_and_feature"  # has the schedule callbacks
TIMEOUT_S = 300
SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _env(**extra):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    for key in ("NO_PROXY", "no_proxy"):  # gRPC honours proxies
        env[key] = ",".join(filter(None, [env.get(key), "127.0.0.1,localhost"]))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _tail(path, lines=30):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def _cluster(directory, cases, worker_args=((), ())):
    """Starts one worker process per entry of `worker_args` on free local
    ports, fitting `cases` in turn and writing its results and log to
    `directory`; yields them; kills whatever still runs on the way out."""
    ports = _free_ports(len(worker_args))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    try:
        for index, args in enumerate(worker_args):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            log = open(directory / f"worker_{index}.log", "w")
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(RUNNER),
                        "worker",
                        str(directory),
                        *cases,
                        *args,
                    ],
                    env=_env(TF_CONFIG=json.dumps(tf_config)),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def _wait(processes, logs, done):
    """Polls the workers until `done(exit_codes)`, one of them fails, or
    TIMEOUT_S; returns the exit codes (`None` for those still running)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        codes = [process.poll() for process in processes]
        if done(codes) or any(code not in (None, 0) for code in codes):
            return codes
        if time.monotonic() > deadline:
            pytest.fail(f"workers ran over {TIMEOUT_S} s:\n" + _tails(logs, codes))
        time.sleep(0.2)


def _tails(logs, codes):
    return "\n".join(
        f"--- worker {i} (exit code {code}):\n" + _tail(logs / f"worker_{i}.log")
        for i, code in enumerate(codes)
    )


def _wait_all(processes, logs):
    codes = _wait(processes, logs, lambda codes: None not in codes)
    assert codes == [0] * len(processes), _tails(logs, codes)


def _load(path):
    return dict(np.load(path))


def _assert_same_run(run, reference, epochs=slice(None)):
    """Same history (for the epochs given), final weights and predictions,
    and the same variables on every replica."""
    keys = sorted(k for k in reference if k.startswith("history/"))
    assert sorted(k for k in run if k.startswith("history/")) == keys
    for key in keys:
        np.testing.assert_allclose(
            run[key], reference[key][epochs], rtol=1e-5, atol=1e-6, err_msg=key
        )
    weights = sorted(
        (k for k in reference if k.startswith("weight_")),
        key=lambda k: int(k.split("_")[1]),
    )
    assert len(weights) == len([k for k in run if k.startswith("weight_")])
    for key in weights:
        np.testing.assert_allclose(
            run[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    np.testing.assert_allclose(
        run["predictions"], reference["predictions"], rtol=1e-5, atol=1e-5
    )
    assert float(run["replica_spread"]) == 0.0


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """Each case fitted on one device, then under MirroredStrategy."""
    out = tmp_path_factory.mktemp("mirrored")
    log = out / "runner.log"
    with open(log, "w") as stream:
        try:
            subprocess.run(
                [sys.executable, str(RUNNER), "mirrored", str(out), *MIRRORED_CASES],
                env=_env(),
                stdout=stream,
                stderr=subprocess.STDOUT,
                timeout=TIMEOUT_S,
                check=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            pytest.fail(f"{error}\n{_tail(log)}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", MIRRORED_CASES)
def test_mirrored_strategy_matches_one_device(mirrored_runs, case):
    one_device = _load(mirrored_runs / f"{case}_one_device.npz")
    mirrored = _load(mirrored_runs / f"{case}_mirrored.npz")
    assert int(one_device["replicas"]) == 1 and int(mirrored["replicas"]) == 2
    # One case creates its teacher outside the scope: it is only read, so
    # the result is the same.
    assert bool(mirrored["teacher_mirrored"]) == (case != TEACHER_OUTSIDE)
    _assert_same_run(mirrored, one_device)
    assert one_device["history/loss"][-1] != pytest.approx(
        one_device["history/loss"][0]
    )


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["ema", "snapshot"])
def test_self_distiller_teacher_is_updated_on_every_replica(mirrored_runs, teacher):
    # The EMA is updated in the replicated train step, each replica on its
    # own copy; the snapshot by a callback. Every copy must match one device.
    one_device = _load(mirrored_runs / f"self_distillation_{teacher}_one_device.npz")
    mirrored = _load(mirrored_runs / f"self_distillation_{teacher}_mirrored.npz")
    teacher_keys = [k for k in one_device if k.startswith("teacher/")]
    assert teacher_keys
    for key in teacher_keys:
        np.testing.assert_allclose(
            mirrored[key], one_device[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    gaps = [
        np.max(np.abs(mirrored[key] - mirrored[key.replace("teacher/", "student/")]))
        for key in teacher_keys
    ]
    if teacher == "ema":  # an average of past weights, behind the model
        assert min(gaps) > 1e-4
    else:  # the snapshot taken at the end of the last epoch
        assert max(gaps) == 0.0
        assert mirrored["history/distillation_loss"][0] == 0.0  # no teacher yet
        assert mirrored["history/distillation_loss"][1] > 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "option, keras_error",
    [
        ("jit_compile", "located in device"),
        ("steps_per_execution", "placeholder tensor"),
    ],
)
def test_options_tensorflow_cannot_distribute_are_refused(
    mirrored_runs, option, keras_error
):
    limits = json.loads((mirrored_runs / "limits.json").read_text())
    # The limit is TensorFlow's: a plain Keras model fails deep in a graph.
    # When this assertion fails, TensorFlow lifted it: relax
    # kerasdistill.distribute.check_compile.
    assert limits[f"keras_{option}"] is not None, f"{option} now works in TensorFlow"
    assert keras_error in limits[f"keras_{option}"]["message"]
    refused = limits[f"distiller_{option}"]
    assert refused["type"] == "ValueError"
    assert "MirroredStrategy with 2 replica(s)" in refused["message"]
    assert "train on one device" in refused["message"]


@pytest.fixture(scope="module")
def multi_worker_runs(tmp_path_factory):
    """MULTI_WORKER_CASES fitted in turn by one cluster of 2 workers, which
    then read a shuffled cache of teacher outputs."""
    out = tmp_path_factory.mktemp("multi_worker")
    with _cluster(out, MULTI_WORKER_CASES, [("--shuffled-cache",)] * 2) as workers:
        _wait_all(workers, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", MULTI_WORKER_CASES)
def test_multi_worker_matches_one_device(mirrored_runs, multi_worker_runs, case):
    reference = _load(mirrored_runs / f"{case}_one_device.npz")
    for index in range(2):
        run = _load(multi_worker_runs / f"{case}_worker_{index}.npz")
        assert int(run["replicas"]) == 2
        _assert_same_run(run, reference)


@pytest.mark.slow
def test_multi_worker_refuses_options_tensorflow_cannot_distribute(multi_worker_runs):
    for index in range(2):
        refused = json.loads(
            (multi_worker_runs / f"limits_worker_{index}.json").read_text()
        )
        for option in ("jit_compile", "steps_per_execution"):
            assert refused[f"distiller_{option}"]["type"] == "ValueError"
            assert (
                "MultiWorkerMirroredStrategy with 2 replica(s)"
                in (refused[f"distiller_{option}"]["message"])
            )


@pytest.mark.slow
def test_multi_worker_reads_each_cached_sample_once_per_epoch(multi_worker_runs):
    # With the same seed on every worker, the workers shuffle alike and each
    # reads its own share of every global batch. (Without a seed, each
    # shuffles its own way, as with Keras's arrays: some samples are read
    # twice in an epoch and others not at all.)
    orders = [
        json.loads((multi_worker_runs / f"shuffled_cache_worker_{i}.json").read_text())
        for i in range(2)
    ]
    for epoch in range(2):
        first, second = (order[epoch] for order in orders)
        assert len(first) == len(second) == SAMPLES // 2
        assert sorted(first + second) == list(range(SAMPLES))
    assert orders[0][0] != orders[0][1]  # reshuffled at each epoch


@pytest.mark.slow
def test_killed_worker_resumes_and_continues_the_schedules(mirrored_runs, tmp_path):
    case = FAULT_TOLERANCE_CASE
    reference = _load(mirrored_runs / f"{case}_one_device.npz")
    backup = tmp_path / "backup"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    killed_at = ("--kill-at", "1:1")  # epoch 1, after its second batch
    with _cluster(
        first,
        [case],
        [("--backup-dir", str(backup)), ("--backup-dir", str(backup), *killed_at)],
    ) as workers:
        codes = _wait(workers, first, lambda codes: codes[1] is not None)
        assert codes[1] == -signal.SIGKILL, _tails(first, codes)
        # Its peer cannot go on without it: the cluster manager (this test)
        # stops it and restarts both, as after a preemption.
    assert not list(first.glob("*.npz"))
    for index in range(2):
        metadata = json.loads(
            (backup / f"worker_{index}" / "training_metadata.json").read_text()
        )
        assert metadata["epoch"] == 1  # backed up at the end of epoch 0

    with _cluster(second, [case], [("--backup-dir", str(backup))] * 2) as workers:
        _wait_all(workers, second)
    for index in range(2):
        run = _load(second / f"{case}_worker_{index}.npz")
        assert list(run["epochs"]) == [1, 2]  # resumed, not restarted
        np.testing.assert_allclose(run["history/alpha"], ALPHAS[1:], rtol=1e-6)
        np.testing.assert_allclose(run["history/temperature"], TEMPERATURES[1:])
        _assert_same_run(run, reference, epochs=slice(1, None))
    assert not list(backup.iterdir())  # each backup deleted when training ended


# In-process checks of where the parts are created; one replica suffices.


@pytest.fixture
def strategy():
    return tf.distribute.MirroredStrategy(["/cpu:0"])


def _place(strategy, where):
    """Builds teacher, student, loss and Distiller in or out of the scope."""

    def scope(part):
        return strategy.scope() if where.get(part, True) else contextlib.nullcontext()

    with scope("teacher"):
        teacher = make_classifier(16, name="teacher")
    with scope("student"):
        student = make_classifier(4, name="student")
    with scope("loss"):
        loss = kd.LogitsDistillation(2.0)
    with scope("distiller"):
        return kd.Distiller(teacher, student, loss)


@pytest.mark.parametrize("outside", ["teacher", "loss"])
def test_teacher_and_losses_may_be_created_outside_the_scope(strategy, outside):
    distiller = _place(strategy, {outside: False})
    distiller.compile("adam", SPARSE_CE)  # outside the scope is fine too
    assert distiller.distribute_strategy is strategy
    # compile() created the optimizer in the Distiller's scope.
    assert isinstance(
        distiller.optimizer.iterations.value, tf.distribute.DistributedValues
    )


def test_optimizer_created_outside_the_scope_is_refused(strategy):
    distiller = _place(strategy, {})
    with pytest.raises(
        ValueError, match="optimizer to be created in the `strategy.scope"
    ):
        distiller.compile(keras.optimizers.Adam(), SPARSE_CE)
    with strategy.scope():
        optimizer = keras.optimizers.Adam()
    distiller.compile(optimizer, SPARSE_CE)  # created inside: accepted
    assert distiller.optimizer is optimizer


@pytest.mark.parametrize(
    "where, match",
    [
        ({"student": False}, "student to be created inside the `strategy.scope"),
        ({"distiller": False}, "Distiller to be created inside the `strategy.scope"),
        (
            {"teacher": False, "student": False, "loss": False},
            "student to be created inside the `strategy.scope",
        ),
    ],
)
def test_student_and_distiller_outside_the_scope_are_refused(strategy, where, match):
    with pytest.raises(ValueError, match=match) as error:
        _place(strategy, where)
    assert "Build (or load)" in str(error.value) or "Create the Distiller" in str(
        error.value
    )


def test_parts_from_two_strategies_are_refused(strategy):
    other = tf.distribute.MirroredStrategy(["/cpu:0"])
    with other.scope():
        teacher = make_classifier(16, name="teacher")
    with strategy.scope():
        student = make_classifier(4, name="student")
        with pytest.raises(ValueError, match="same `strategy.scope"):
            kd.Distiller(teacher, student, kd.LogitsDistillation())


def test_compile_in_another_scope_is_refused(strategy):
    distiller = _place(
        strategy,
        {"teacher": False, "student": False, "loss": False, "distiller": False},
    )
    with strategy.scope():
        with pytest.raises(ValueError, match="compile\\(\\) inside the scope"):
            distiller.compile("sgd", SPARSE_CE)
    distiller.compile("sgd", SPARSE_CE)  # the Distiller trains on one device
    assert distiller.distribute_strategy.num_replicas_in_sync == 1


def test_options_are_not_refused_on_one_replica(strategy, classification_data):
    x, y = classification_data
    distiller = _place(strategy, {})
    distiller.compile("sgd", SPARSE_CE, steps_per_execution=2, jit_compile=True)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
