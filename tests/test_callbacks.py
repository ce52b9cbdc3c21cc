"""Callbacks driving alpha, temperatures and loss weights: values assigned
and logged, compiled functions not traced again, resume, bad values."""

import csv
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import BACKEND  # noqa: E402

import kerasdistill as kd  # noqa: E402
from kerasdistill.schedules import callbacks  # noqa: E402
from kerasdistill.schedules import curves as schedules  # noqa: E402

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def mlp(width, name):
    inputs = keras.Input((6,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(inputs)
    outputs = keras.layers.Dense(3, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def make_distiller(losses=None, cls=kd.Distiller, **compile_kwargs):
    losses = losses or kd.LogitsDistillation(temperature=2.0)
    distiller = cls(mlp(16, "teacher"), mlp(4, "student"), losses)
    distiller.compile(optimizer="adam", loss=SPARSE_CE, **compile_kwargs)
    return distiller


def data(n=64):
    x = np.random.default_rng(0).normal(size=(n, 6)).astype("float32")
    return x, np.argmax(x[:, :3], axis=1).astype("int32")


def attach(callback, distiller, steps=4):
    """Sets a callback up as fit() would, without fitting."""
    callback.set_model(distiller)
    callback.set_params({"epochs": 10, "steps": steps, "verbose": 0})
    callback.on_train_begin()
    return callback


class EpochLogs(keras.callbacks.Callback):
    """Keeps every epoch's logs and the batch logs it sees."""

    def __init__(self):
        super().__init__()
        self.epochs, self.batches = {}, []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = dict(logs)


def test_epoch_schedules_assign_variables_and_log_to_history_and_csv(tmp_path):
    distiller = make_distiller(
        [kd.LogitsDistillation(2.0), kd.RegressionDistillation("mse")]
    )
    alpha = schedules.Linear(0.9, 0.3, steps=3)
    temperature = schedules.ExponentialDecay(10.0, 0.5, end=1.0)
    weight = schedules.WarmupHold(2.0, 2, start=0.5)
    csv_path = str(tmp_path / "log.csv")
    history = distiller.fit(
        *data(),
        batch_size=32,
        epochs=5,
        verbose=0,
        callbacks=[
            callbacks.AlphaScheduler(alpha),
            callbacks.TemperatureScheduler(temperature),
            callbacks.LossWeightScheduler(weight, loss=1),
            keras.callbacks.CSVLogger(csv_path),
        ],
    ).history
    epochs = range(5)
    np.testing.assert_allclose(history["alpha"], [alpha(e) for e in epochs], 1e-6)
    np.testing.assert_allclose(
        history["temperature"], [temperature(e) for e in epochs], 1e-6
    )
    np.testing.assert_allclose(
        history["distillation_loss_weight_1"], [weight(e) for e in epochs], 1e-6
    )
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    np.testing.assert_allclose(
        [float(r["distillation_loss_weight_1"]) for r in rows],
        [weight(e) for e in epochs],
        1e-6,
    )
    np.testing.assert_allclose([float(r["alpha"]) for r in rows], history["alpha"])
    assert float(distiller.student_loss_weight.numpy()) == pytest.approx(alpha(4))
    assert float(distiller.distillation_losses[0].temperature.numpy()) == 1.0
    assert float(distiller.distillation_loss_weights[0].numpy()) == 1.0


class CallCounter(keras.layers.Layer):
    """Identity layer counting its traces (its Python calls: once per trace
    of a compiled function, once per step when PyTorch runs eagerly)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def call(self, x):
        self.traces += 1
        return x


def counted_student():
    inputs = keras.Input((6,), name="student_input")
    counted = CallCounter(name="student_counter")(inputs)
    hidden = keras.layers.Dense(4, activation="relu", name="student_hidden")(counted)
    outputs = keras.layers.Dense(3, name="student_logits")(hidden)
    return keras.Model(inputs, outputs, name="student")


class StepRecorder(EpochLogs):
    """First in the callbacks list: records each execution's logs as the
    train step made them (before a scheduler writes its value), with the
    number of traces so far. It never reads `self.model`: under JAX that
    property syncs the state, which would hide a scheduler that forgets to."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self.batches[-1].update(traces=self.counter.traces, batch=batch)


# PyTorch runs `steps_per_execution=1` only, and `jit_compile=True` there
# means torch.compile (slow to start); the other two compile with XLA.
COMPILED = (
    {"jit_compile": False, "steps_per_execution": 1}
    if BACKEND == "torch"
    else {"jit_compile": True, "steps_per_execution": 2}
)


def group_losses(batches, steps_per_epoch):
    """The loss of each execution, from the epoch's running means that
    Keras logs per batch (equal batch sizes)."""
    losses, previous_sum, previous_count = [], 0.0, 0
    for logs in batches:
        count = logs["batch"] + 1
        if count <= previous_count:  # a new epoch: the means were reset
            previous_sum, previous_count = 0.0, 0
        total = logs["loss"] * count
        losses.append((total - previous_sum) / (count - previous_count))
        previous_sum, previous_count = total, count
        if count == steps_per_epoch:
            previous_sum, previous_count = 0.0, 0
    return losses


def test_per_batch_values_take_effect_at_their_batch_without_retracing():
    """alpha, the temperature and a loss weight all change per batch (the
    weight by a step function across the epoch boundary). With a learning
    rate of 0 and the same batch every step, the loss of the execution
    starting at step s must be alpha(s) * S + (1 - alpha(s)) * w(s) * D(T(s)):
    the values assigned for that batch, not the previous ones (under JAX
    the variables live in the jitted state, see callbacks.py). The train
    function is traced once (TensorFlow, JAX)."""
    rng = np.random.default_rng(0)
    x8 = rng.normal(size=(8, 6)).astype("float32")
    y8 = np.argmax(x8[:, :3], axis=1).astype("int32")
    x, y = np.tile(x8, (8, 1)), np.tile(y8, 8)
    steps_per_epoch, spe = 8, COMPILED["steps_per_execution"]
    alpha = schedules.Linear(0.9, 0.1, steps=15)
    weight = schedules.Piecewise([3, 11], [1.0, 0.0, 2.0])

    def temperature(step):
        return 1.0 + step

    student = counted_student()
    distiller = kd.Distiller(mlp(16, "teacher"), student, kd.LogitsDistillation(2.0))
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss=SPARSE_CE,
        **COMPILED,
    )
    recorder = StepRecorder(student.get_layer("student_counter"))
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[
            recorder,
            callbacks.AlphaScheduler(alpha, update_freq="batch"),
            callbacks.TemperatureScheduler(temperature, update_freq="batch"),
            callbacks.LossWeightScheduler(weight, update_freq="batch"),
        ],
    )
    teacher_logits = distiller.teacher.predict(x8, verbose=0)
    student_logits = distiller.student.predict(x8, verbose=0)
    student_loss = float(SPARSE_CE(y8, student_logits))

    def expected(step):
        distillation = float(
            kd.LogitsDistillation(temperature(step)).compute_loss(
                teacher_logits, student_logits
            )
        )
        a = alpha(step)
        return a * student_loss + (1 - a) * weight(step) * distillation

    starts = range(0, 2 * steps_per_epoch, spe)
    assert len(recorder.batches) == len(starts)
    np.testing.assert_allclose(
        group_losses(recorder.batches, steps_per_epoch),
        [expected(s) for s in starts],
        rtol=1e-4,
    )
    # the step logs the values it read (the Distiller's LatestValue metrics)
    np.testing.assert_allclose(
        [b["alpha"] for b in recorder.batches], [alpha(s) for s in starts], 1e-6
    )
    np.testing.assert_allclose(
        [b["temperature"] for b in recorder.batches],
        [temperature(s) for s in starts],
        1e-6,
    )
    assert recorder.batches[0]["traces"] >= 1
    if BACKEND != "torch":  # PyTorch runs the step eagerly: nothing is traced
        assert {b["traces"] for b in recorder.batches} == {
            recorder.batches[0]["traces"]
        }
    # after fit, the variables hold the last values (synced back under JAX)
    last = 2 * steps_per_epoch - spe
    assert float(distiller.student_loss_weight.numpy()) == pytest.approx(alpha(last))
    assert float(distiller.distillation_losses[0].temperature.numpy()) == pytest.approx(
        temperature(last)
    )
    assert float(distiller.distillation_loss_weights[0].numpy()) == weight(last)


def test_batch_logs_follow_the_schedules_per_execution():
    """steps_per_execution=2 (TensorFlow, JAX): Keras reports the last step
    of each execution, the value was set at its first (once per
    execution); a per-epoch schedule beside it."""
    x, y = data(64)
    alpha = schedules.Linear(0.9, 0.1, steps=15)
    temperature = schedules.Piecewise([1], [4.0, 1.5])
    distiller = make_distiller(**COMPILED)
    recorder = EpochLogs()
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[
            callbacks.AlphaScheduler(alpha, update_freq="batch"),
            callbacks.TemperatureScheduler(temperature),
            recorder,  # after the schedulers: sees the values they write
        ],
    )
    spe = COMPILED["steps_per_execution"]
    assert len(recorder.batches) == 16 // spe
    for i, batch in enumerate(recorder.batches):
        first_step = spe * i
        assert batch["alpha"] == pytest.approx(alpha(first_step), abs=1e-6)
        assert batch["temperature"] == pytest.approx(temperature(first_step // 8))


def test_keras_learning_rate_schedule_and_callable_work_as_schedules():
    distiller = make_distiller()
    decay = keras.optimizers.schedules.ExponentialDecay(0.8, 1, 0.5)
    callback = attach(callbacks.AlphaScheduler(decay), distiller)
    callback.on_epoch_begin(2)
    assert float(distiller.student_loss_weight.numpy()) == pytest.approx(0.2)
    callback = attach(
        callbacks.TemperatureScheduler(lambda step: 1.0 + step, update_freq="batch"),
        distiller,
        steps=4,
    )
    callback.on_epoch_begin(3)
    callback.on_train_batch_begin(2)  # absolute step 3 * 4 + 2
    assert float(distiller.distillation_losses[0].temperature.numpy()) == 15.0
    logs = {}
    callback.on_train_batch_end(2, logs)
    callback.on_epoch_end(3, logs)
    assert logs == {"temperature": 15.0}


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"interrupted at epoch {epoch}")


def test_resume_with_backup_and_restore_continues_every_schedule(tmp_path):
    x, y = data(64)
    steps_per_epoch, epochs = 4, 6

    def run(extra_callbacks):
        keras.utils.set_random_seed(0)  # a fresh process would rebuild this
        distiller = make_distiller()
        recorder = EpochLogs()
        scheduled = [
            kd.recipes.alpha_ramp(epochs, 0.9, 0.3),
            kd.recipes.progressive_temperature(),
            callbacks.LossWeightScheduler(
                schedules.Cosine(0.0, 1.0, steps=steps_per_epoch * epochs),
                update_freq="batch",
            ),
        ]
        try:
            distiller.fit(
                x,
                y,
                batch_size=16,
                epochs=epochs,
                verbose=0,
                shuffle=False,
                callbacks=scheduled + extra_callbacks + [recorder],
            )
        except RuntimeError as error:
            assert "interrupted at epoch 3" in str(error)
        return recorder.epochs

    uninterrupted = run([])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = run([backup, InterruptAt(3)])
    resumed = run([backup])
    assert sorted(first) == [0, 1, 2] and sorted(resumed) == [3, 4, 5]
    for epoch in range(epochs):
        logged = {**first, **resumed}[epoch]
        expected = uninterrupted[epoch]
        for key in ("alpha", "temperature", "distillation_loss_weight_0"):
            assert logged[key] == pytest.approx(expected[key], abs=1e-6), key
        # The weights, optimizer state and variables were restored too.
        assert logged["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    weight = schedules.Cosine(0.0, 1.0, steps=steps_per_epoch * epochs)
    assert resumed[5]["distillation_loss_weight_0"] == pytest.approx(
        weight(5 * steps_per_epoch + 3), abs=1e-6
    )


class EpochCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.finished = 0

    def on_epoch_end(self, epoch, logs=None):
        self.finished += 1


@pytest.mark.parametrize(
    "make_callback, message",
    [
        (
            lambda: callbacks.AlphaScheduler(schedules.Piecewise([2], [0.5, 1.5])),
            r"AlphaScheduler: the schedule gave alpha=1.5 in epoch 3 "
            r"\(epoch index 2, step 2\)\. Expected alpha in \[0, 1\]",
        ),
        (
            lambda: callbacks.TemperatureScheduler(
                schedules.Linear(2.0, -2.0, steps=4)
            ),
            r"TemperatureScheduler: the schedule gave temperature=0.0 in "
            r"epoch 3 .* Expected a temperature > 0",
        ),
        (
            lambda: callbacks.LossWeightScheduler(
                lambda step: math.nan if step >= 2 else 1.0
            ),
            r"LossWeightScheduler: the schedule gave "
            r"distillation_loss_weight_0=nan in epoch 3 .* Expected a loss "
            r"weight >= 0",
        ),
    ],
    ids=["alpha", "temperature", "weight_nan"],
)
def test_bad_epoch_value_raises_before_training(make_callback, message):
    """A per-epoch schedule is checked at every epoch of the run before the
    first one trains, and the error names the epoch where it leaves range."""
    distiller = make_distiller()
    counter = EpochCounter()
    before = [keras.ops.convert_to_numpy(w) for w in distiller.student.weights]
    with pytest.raises(ValueError, match=message):
        distiller.fit(
            *data(32),
            batch_size=32,
            epochs=5,
            verbose=0,
            callbacks=[make_callback(), counter],
        )
    assert counter.finished == 0
    for old, new in zip(before, distiller.student.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


def test_bad_value_per_batch_names_the_step():
    distiller = make_distiller()
    callback = attach(
        callbacks.AlphaScheduler(lambda step: 1.0 - 0.1 * step, update_freq="batch"),
        distiller,
        steps=4,
    )
    callback.on_epoch_begin(2)
    callback.on_train_batch_begin(2)  # step 10: alpha 0.0 is fine
    with pytest.raises(
        ValueError, match=r"alpha=-0.1.* in epoch 3 \(epoch index 2, step 11\)"
    ):
        callback.on_train_batch_begin(3)
    with pytest.raises(TypeError, match="AlphaScheduler: the schedule returned 'high'"):
        attach(callbacks.AlphaScheduler(lambda s: "high"), distiller).on_epoch_begin(0)


def test_choosing_the_loss_by_index_or_name():
    first = kd.LogitsDistillation(2.0, name="soft")
    second = kd.LogitsDistillation(3.0, name="hard")
    distiller = make_distiller([first, second, kd.RegressionDistillation()])
    with pytest.raises(
        ValueError, match=r"exactly one .* Received 2: \['soft', 'hard'\]"
    ):
        attach(callbacks.TemperatureScheduler(5.0), distiller)
    callback = attach(callbacks.TemperatureScheduler(5.0, loss="hard"), distiller)
    callback.on_epoch_begin(0)
    assert float(second.temperature.numpy()) == 5.0
    assert float(first.temperature.numpy()) == 2.0
    assert callback.log_name == "hard_temperature"
    with pytest.raises(ValueError, match="has no temperature variable"):
        attach(callbacks.TemperatureScheduler(5.0, loss=2), distiller)
    callback = attach(callbacks.LossWeightScheduler(0.25, loss="hard"), distiller)
    callback.on_epoch_begin(0)
    callback = attach(callbacks.LossWeightScheduler(0.75, loss=-1), distiller)
    callback.on_epoch_begin(0)
    assert [float(w.numpy()) for w in distiller.distillation_loss_weights] == [
        1.0,
        0.25,
        0.75,
    ]
    assert callback.log_name == "distillation_loss_weight_2"
    with pytest.raises(ValueError, match=r"no distillation loss is named 'mid'"):
        attach(callbacks.LossWeightScheduler(1.0, loss="mid"), distiller)
    with pytest.raises(ValueError, match=r"loss index in \[0, 2\]. Received: loss=3"):
        attach(callbacks.LossWeightScheduler(1.0, loss=3), distiller)
    with pytest.raises(TypeError, match="index \\(int\\) or the name"):
        callbacks.LossWeightScheduler(1.0, loss=1.0)


def test_setup_errors():
    model = mlp(4, "plain")
    model.compile(optimizer="adam", loss=SPARSE_CE)
    with pytest.raises(
        TypeError,
        match="kerasdistill.MutualLearning. Received a model of type Functional",
    ):
        attach(callbacks.AlphaScheduler(0.5), model)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        attach(
            callbacks.AlphaScheduler(0.5, update_freq="batch"),
            make_distiller(),
            steps=None,
        )
    with pytest.raises(ValueError, match="update_freq"):
        callbacks.AlphaScheduler(0.5, update_freq="step")
    with pytest.raises(TypeError, match="Expected a schedule"):
        callbacks.AlphaScheduler("linear")


def test_alpha_and_temperature_drive_deep_supervision_and_mutual_learning():
    """Both have a Distiller's alpha variable and a distillation loss; only
    a Distiller has loss weights."""
    x, y = data(32)
    models = {
        "deep_supervision": kd.DeepSupervision(
            mlp(8, "net"), ["net_hidden"], kd.LogitsDistillation(4.0)
        ),
        "mutual": kd.MutualLearning(
            [mlp(4, "net_a"), mlp(4, "net_b")], kd.LogitsDistillation(4.0)
        ),
    }
    for model in models.values():
        model.compile("adam", SPARSE_CE)
        logs = EpochLogs()
        model.fit(
            x,
            y,
            epochs=2,
            batch_size=16,
            verbose=0,
            callbacks=[
                callbacks.AlphaScheduler(schedules.Linear(0.8, 0.2, 1)),
                callbacks.TemperatureScheduler(schedules.Linear(3.0, 1.0, 1)),
                logs,
            ],
        )
        assert [logs.epochs[e]["alpha"] for e in (0, 1)] == pytest.approx([0.8, 0.2])
        assert [logs.epochs[e]["temperature"] for e in (0, 1)] == pytest.approx(
            [3.0, 1.0]
        )
        assert float(model.student_loss_weight.numpy()) == pytest.approx(0.2)
        assert float(model.distillation_loss.temperature.numpy()) == pytest.approx(1.0)
        with pytest.raises(TypeError, match="kerasdistill.Distiller. Received"):
            attach(callbacks.LossWeightScheduler(1.0), model)


def test_verbose_prints_each_value(capsys):
    callback = attach(
        callbacks.AlphaScheduler(schedules.Linear(0.8, 0.4, 2), verbose=1),
        make_distiller(),
    )
    callback.on_epoch_begin(1)
    assert "Epoch 2: AlphaScheduler setting alpha to 0.6" in capsys.readouterr().out


@pytest.mark.parametrize(
    "callback",
    [
        callbacks.AlphaScheduler(schedules.Linear(0.9, 0.3, 9), "batch", 1),
        callbacks.TemperatureScheduler(schedules.Constant(2.0), loss="soft"),
        callbacks.LossWeightScheduler(schedules.WarmupHold(1.0, 3), loss=1),
    ],
    ids=lambda c: type(c).__name__,
)
def test_callback_config_round_trip(callback):
    rebuilt = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(callback)
    )
    assert type(rebuilt) is type(callback)
    assert rebuilt.get_config() == callback.get_config()
    assert [rebuilt.schedule(s) for s in range(5)] == [
        callback.schedule(s) for s in range(5)
    ]


def test_a_learned_temperature_is_left_out_of_the_schedule():
    """CTKD learns its temperature: a TemperatureScheduler refuses it before
    training, and schedules the other loss when there is one."""
    x, y = data(32)
    alone = make_distiller(kd.CTKD(name="ctkd"))
    before = [keras.ops.convert_to_numpy(w) for w in alone.student.weights]
    with pytest.raises(ValueError, match="learned, not scheduled"):
        alone.fit(
            x, y, epochs=2, verbose=0, callbacks=[callbacks.TemperatureScheduler(3.0)]
        )
    for old, new in zip(before, alone.student.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
    with pytest.raises(ValueError, match="GradientReversalScheduler"):
        alone.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[callbacks.TemperatureScheduler(3.0, loss=0)],
        )
    both = make_distiller(
        [kd.LogitsDistillation(2.0, name="soft"), kd.CTKD(name="ctkd")]
    )
    history = both.fit(
        x, y, epochs=2, verbose=0, callbacks=[callbacks.TemperatureScheduler(3.0)]
    ).history
    assert history["soft_temperature"] == pytest.approx([3.0, 3.0])
    assert "ctkd_temperature" in history


def test_verbose_values_are_rounded(capsys):
    distiller = make_distiller()
    callback = callbacks.TemperatureScheduler(lambda step: 48 / 13, verbose=1)
    distiller.fit(*data(32), epochs=1, verbose=0, callbacks=[callback])
    printed = capsys.readouterr().out
    assert "setting temperature to 3.69231." in printed


def test_alpha_scheduler_on_a_transfer_set_is_refused():
    distiller = make_distiller()
    x, _ = data(32)
    with pytest.raises(ValueError, match="alpha is not applied"):
        distiller.fit(x, epochs=1, verbose=0, callbacks=[callbacks.AlphaScheduler(0.3)])
