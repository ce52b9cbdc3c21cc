"""SelfDistiller: the teacher is a different state of the model (snapshot or
EMA), PS-KD targets, regression, intermediate layers, saving, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_classifier
from conftest import make_regressor

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def distillation_loss_and_gradient(distiller, x, y):
    """The distillation term alone (alpha = 0) and its gradient norm."""
    distiller.student_loss_weight = 0.0
    weights = distiller.student.trainable_weights
    with tf.GradientTape() as tape:
        loss = distiller.compute_loss(x, y, None)
    gradients = tape.gradient(loss, weights)
    return float(loss), float(tf.linalg.global_norm(gradients))


def test_same_step_stop_gradient_target_is_the_trap(classification_data):
    x, _ = classification_data
    model = make_classifier(8)
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = kd.LogitsDistillation(2.0).compute_loss(
            keras.ops.stop_gradient(outputs), outputs
        )
    gradients = tape.gradient(loss, model.trainable_weights)
    assert abs(float(loss)) < 1e-6
    assert float(tf.linalg.global_norm(gradients)) < 1e-6


@pytest.mark.parametrize("teacher", ["snapshot", "ema"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_teacher_is_another_state_loss_and_gradient_are_not_zero(
    teacher, task, classification_data, regression_data
):
    if task == "classification":
        (x, y), model = classification_data, make_classifier(8)
        loss, supervised = kd.LogitsDistillation(2.0), SPARSE_CE
    else:
        (x, y), model = regression_data, make_regressor(8)
        loss, supervised = kd.RegressionDistillation("mse"), "mse"
    distiller = kd.SelfDistiller(model, teacher, loss)
    distiller.compile(keras.optimizers.SGD(0.1), supervised)
    assert distiller.student is model and not distiller.teacher.trainable
    if teacher == "snapshot":
        assert not distiller.teacher_ready
        distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)  # first refresh
    assert distiller.teacher_ready
    # The teacher holds the current state: this would be the trap.
    same_state_loss, same_state_gradient = distillation_loss_and_gradient(distiller, x, y)
    assert same_state_loss == pytest.approx(0.0, abs=1e-6)
    assert same_state_gradient == pytest.approx(0.0, abs=1e-6)
    distiller.student_loss_weight = 0.5
    distiller.train_on_batch(x, y)  # one optimizer step (and one EMA step)
    loss_value, gradient_norm = distillation_loss_and_gradient(distiller, x, y)
    assert loss_value > 1e-6 and gradient_norm > 1e-5


def test_ema_update_matches_numpy_recursion(regression_data):
    x, y = regression_data
    distiller = kd.SelfDistiller(
        make_regressor(4), "ema", kd.RegressionDistillation("mse"), ema_decay=0.6
    )
    distiller.compile(keras.optimizers.SGD(0.05), "mse")
    records = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            records.append((distiller.student.get_weights(), distiller.teacher.get_weights()))

    traces = []
    teacher = distiller.teacher.get_weights()
    for decay in (0.6, 0.3):  # the decay is a variable: no new trace
        distiller.ema_decay = decay
        start = len(records)
        distiller.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0,
                      callbacks=[Record()])
        traces.append(distiller.train_function)
        for step, (student, got) in enumerate(records[start:], start=start + 1):
            d = min(decay, 1.0 - 1.0 / (step + 1))
            teacher = [d * t + (1 - d) * s for t, s in zip(teacher, student)]
            for expected, value in zip(teacher, got):
                np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    assert len(records) == 8 and traces[0] is traces[1]


def test_snapshot_taken_every_n_epochs_and_no_teacher_before(classification_data):
    x, y = classification_data
    model = make_classifier(8)
    initial = model.get_weights()
    distiller = kd.SelfDistiller(
        model, "snapshot", kd.LogitsDistillation(2.0), snapshot_interval=2
    )
    distiller.compile("adam", SPARSE_CE, run_eagerly=True)  # fast, and supported
    teachers, students = [], []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            teachers.append(distiller.teacher.get_weights())

        def on_epoch_end(self, epoch, logs=None):
            students.append(distiller.student.get_weights())

    history = distiller.fit(x, y, epochs=5, batch_size=16, verbose=0,
                            callbacks=[Record()]).history
    expected = [initial, initial, students[1], students[1], students[3]]
    for got, want in zip(teachers, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert history["distillation_loss"][:2] == [0.0, 0.0]  # no teacher yet
    assert all(value > 0 for value in history["distillation_loss"][2:])
    assert history["alpha"] == pytest.approx([0.5] * 5)


def test_pskd_alpha_grows_linearly_and_fit_sets_it(classification_data):
    x, y = classification_data
    loss = kd.LogitsDistillation(1.0, loss="soft_cross_entropy")
    distiller = kd.SelfDistiller(make_classifier(8), "snapshot", loss, progressive_alpha=0.8)
    distiller.compile("adam", SPARSE_CE, run_eagerly=True)
    history = distiller.fit(x, y, epochs=4, batch_size=64, verbose=0).history
    # alpha_t = alpha_T * t / T with t = 1..T, and 0 before the first snapshot.
    expected_share = [0.0, 0.8 * 2 / 4, 0.8 * 3 / 4, 0.8 * 4 / 4]
    assert history["alpha"] == pytest.approx([1 - a for a in expected_share])
    short = kd.SelfDistiller(make_classifier(8), "ema", loss, progressive_alpha=0.5,
                             progressive_epochs=2)
    short.compile("adam", SPARSE_CE, run_eagerly=True)
    history = short.fit(x, y, epochs=3, batch_size=64, verbose=0).history
    assert history["alpha"] == pytest.approx([1 - 0.25, 1 - 0.5, 1 - 0.5])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_pskd_loss_is_the_loss_to_the_mixed_target(task):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 6)).astype("float32")
    if task == "classification":
        model, y = make_classifier(8), rng.integers(0, 3, size=8)
        teacher = rng.normal(size=(8, 3)).astype("float32")
        student = rng.normal(size=(8, 3)).astype("float32")
        loss = kd.LogitsDistillation(1.0, loss="soft_cross_entropy")
        supervised = SPARSE_CE
    else:
        model, y = make_regressor(8), rng.normal(size=(8,)).astype("float32")
        teacher = rng.normal(size=(8, 1)).astype("float32")
        student = rng.normal(size=(8, 1)).astype("float32")
        loss, supervised = kd.RegressionDistillation("mse"), "mse"
    distiller = kd.SelfDistiller(model, "snapshot", loss, progressive_alpha=0.8)
    distiller.compile("adam", supervised)
    distiller.refresh_teacher()
    share = distiller.progressive_share(epoch=2, total_epochs=5)
    assert share == pytest.approx(0.8 * 3 / 5)
    distiller.student_loss_weight = 1.0 - share  # what fit() assigns
    s = tf.constant(student)
    with tf.GradientTape() as tape:
        tape.watch(s)
        value = distiller.compute_loss(
            x, y, s, teacher_taps=(tf.constant(teacher), {}), student_taps=(s, {})
        )
    gradient = tape.gradient(value, s).numpy()
    if task == "classification":
        target = (1 - share) * np.eye(3)[y] + share * np_softmax(teacher)
        p_student = np_softmax(student)
        expected_loss = -(target * np.log(p_student)).sum(-1).mean()
        np.testing.assert_allclose(float(value), expected_loss, rtol=1e-5)
        expected_gradient = (p_student - target) / len(x)
    else:
        target = (1 - share) * y[:, None] + share * teacher
        expected_gradient = 2 * (student - target) / len(x)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-7)


def test_regression_self_distillation_with_huber_and_teacher_bounded(regression_data):
    x, y = regression_data
    losses = [kd.RegressionDistillation("huber", delta=0.5),
              kd.RegressionDistillation("teacher_bounded", margin=0.01)]
    distiller = kd.SelfDistiller(make_regressor(16), "ema", losses)
    distiller.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    history = distiller.fit(x, y, epochs=4, batch_size=16, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["mae"][-1] < history["mae"][0]
    assert history["distillation_loss"][-1] > 0


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_hidden_layer_is_pulled_toward_the_teachers(task, classification_data, regression_data):
    if task == "classification":
        (x, y), model = classification_data, make_classifier(8)
        losses, supervised = [kd.LogitsDistillation(2.0)], SPARSE_CE
    else:
        (x, y), model = regression_data, make_regressor(8)
        losses, supervised = [kd.RegressionDistillation("mse")], "mse"
    hint = kd.FeatureDistillation("mse", "model_hidden", "model_hidden")
    distiller = kd.SelfDistiller(model, "ema", losses + [hint],
                                 distillation_loss_weights=[0.0, 1.0])
    distiller.compile(keras.optimizers.SGD(0.1), supervised)
    distiller.train_on_batch(x, y)
    value, gradient_norm = distillation_loss_and_gradient(distiller, x, y)

    def hidden(network):
        return keras.Model(network.input, network.get_layer("model_hidden").output)(x)

    expected = np.mean((np.asarray(hidden(distiller.teacher)) - np.asarray(hidden(model))) ** 2)
    assert expected > 0 and gradient_norm > 0
    assert value == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kwargs", [
    {"teacher": "ema", "ema_decay": 0.9, "student_loss_weight": 0.3},
    {"teacher": "snapshot", "snapshot_interval": 2, "progressive_alpha": 0.7,
     "progressive_epochs": 10},
])
def test_config_and_keras_file_round_trip(kwargs, tmp_path, classification_data):
    x, y = classification_data
    distiller = kd.SelfDistiller(make_classifier(8), distillation_losses=kd.LogitsDistillation(2.0),
                                 **kwargs)
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"], run_eagerly=True)
    distiller.fit(x, y, epochs=2, batch_size=64, verbose=0)
    config = distiller.get_config()
    rebuilt = kd.SelfDistiller.from_config(config)
    assert rebuilt.get_config() == config
    for key, value in kwargs.items():
        assert config[key] == pytest.approx(value) if isinstance(value, float) else config[key] == value
    path = tmp_path / "self_distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kd.SelfDistiller)
    assert loaded.teacher_ready == distiller.teacher_ready
    for a, b in zip(loaded.get_weights(), distiller.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded(x), distiller(x))
    loaded.fit(x, y, epochs=1, batch_size=64, verbose=0)  # compiled from the file


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"teacher": "ema", "ema_decay": 0.0}, ValueError, r"ema_decay in \(0, 1\)"),
        ({"teacher": "ema", "ema_decay": 1.0}, ValueError, r"ema_decay in \(0, 1\)"),
        ({"teacher": "ema", "ema_decay": -0.5}, ValueError, r"ema_decay in \(0, 1\)"),
        ({"teacher": "snapshot", "snapshot_interval": 0}, ValueError, "snapshot_interval >= 1"),
        ({"teacher": "snapshot", "snapshot_interval": 1.5}, TypeError, "integer >= 1"),
        ({"teacher": "snapshot", "ema_decay": 0.9}, ValueError, 'ema_decay applies to teacher="ema"'),
        ({"teacher": "ema", "snapshot_interval": 2}, ValueError, "snapshot_interval applies to"),
        ({"teacher": "teacher"}, ValueError, "one of"),
        ({"progressive_alpha": 1.5}, ValueError, r"progressive_alpha .* in \(0, 1\]"),
        ({"progressive_alpha": 0.5, "student_loss_weight": 0.5}, ValueError, "pass only one"),
        ({"progressive_epochs": 5}, ValueError, "without progressive_alpha"),
        ({"progressive_alpha": 0.5, "progressive_epochs": 0}, ValueError, "progressive_epochs >= 1"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        kd.SelfDistiller(make_classifier(4), distillation_losses=kd.LogitsDistillation(), **kwargs)


def test_bad_model_raises():
    with pytest.raises(TypeError, match="model to be a `keras.Model`"):
        kd.SelfDistiller("model", distillation_losses=kd.LogitsDistillation())
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="built model"):
        kd.SelfDistiller(unbuilt, distillation_losses=kd.LogitsDistillation())
    ema = kd.SelfDistiller(make_classifier(4), "snapshot", kd.LogitsDistillation())
    with pytest.raises(ValueError, match='teacher="ema" only'):
        ema.ema_decay = 0.5


def test_cached_teacher_outputs_are_refused(classification_data):
    x, y = classification_data
    distiller = kd.SelfDistiller(make_classifier(8), "ema", kd.LogitsDistillation(2.0))
    distiller.compile("adam", SPARSE_CE)
    cached = kd.cache_teacher_outputs(distiller.teacher, (x, y), batch_size=16)
    with pytest.raises(ValueError, match="would be stale"):
        distiller.fit(cached, epochs=1, verbose=0)
