"""SelfDistiller: the teacher is a different state of the model (snapshot or
EMA), PS-KD targets, regression, intermediate layers, the distillation loss
chosen from the compiled loss, alpha schedules, saving, bad input. Every
test runs on TensorFlow, JAX and PyTorch."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import as_numpy
from conftest import float_logs
from conftest import make_classifier
from conftest import make_regressor
from conftest import value_and_gradients

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# Eager steps are the fast path for tiny models on TensorFlow and PyTorch;
# JAX is faster compiled.
EAGER = BACKEND != "jax"


def value_and_gradient_norm(fn, variables):
    """`fn()` and the global norm of its gradient with respect to
    `variables`, on any backend: the variables read the differentiated
    arguments inside a `keras.StatelessScope` (whose updates are dropped)."""

    def with_values(*values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn()

    value, gradients = value_and_gradients(
        with_values, *[as_numpy(v) for v in variables]
    )
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in gradients if g is not None))
    return float(value), float(norm)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def distillation_loss_and_gradient(distiller, x, y):
    """The distillation term alone (alpha = 0) and its gradient norm, with
    the teacher as it is (`training=False`: no EMA update)."""
    distiller.student_loss_weight = 0.0
    return value_and_gradient_norm(
        lambda: distiller.compute_loss(x, y, None, training=False),
        distiller.student.trainable_weights,
    )


def test_same_step_stop_gradient_target_is_the_trap(classification_data):
    x, _ = classification_data
    model = make_classifier(8)

    def same_step_target_loss():
        outputs = model(x, training=True)
        return kd.LogitsDistillation(2.0).compute_loss(
            keras.ops.stop_gradient(outputs), outputs
        )

    loss, gradient_norm = value_and_gradient_norm(
        same_step_target_loss, model.trainable_weights
    )
    assert abs(loss) < 1e-6
    assert gradient_norm < 1e-6


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
    same_state_loss, same_state_gradient = distillation_loss_and_gradient(
        distiller, x, y
    )
    assert same_state_loss == pytest.approx(0.0, abs=1e-6)
    assert same_state_gradient == pytest.approx(0.0, abs=1e-6)
    distiller.student_loss_weight = 0.5
    distiller.train_on_batch(x, y)  # one optimizer step (and one EMA step)
    loss_value, gradient_norm = distillation_loss_and_gradient(distiller, x, y)
    assert loss_value > 1e-6 and gradient_norm > 1e-5


def test_ema_update_matches_numpy_recursion(regression_data):
    # Step k first averages in the weights it starts from (those step k - 1
    # left), then learns from that teacher: the teacher recorded after step
    # k has averaged the model's states before steps 1..k.
    x, y = regression_data
    distiller = kd.SelfDistiller(
        make_regressor(4), "ema", kd.RegressionDistillation("mse"), ema_decay=0.6
    )
    distiller.compile(keras.optimizers.SGD(0.05), "mse")
    records = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            model = self.model  # under JAX, syncs the training state first
            records.append((model.student.get_weights(), model.teacher.get_weights()))

    traces = []
    teacher = distiller.teacher.get_weights()
    student = distiller.student.get_weights()  # what step 1 starts from
    updates = 0
    for decay in (0.6, 0.3):  # the decay is a variable: no new trace
        distiller.ema_decay = decay
        start = len(records)
        distiller.fit(
            x,
            y,
            epochs=1,
            batch_size=16,
            shuffle=False,
            verbose=0,
            callbacks=[Record()],
        )
        traces.append(distiller.train_function)
        for after_step, got in records[start:]:
            d = min(decay, 1.0 - 1.0 / (updates + 1))
            teacher = [d * t + (1 - d) * s for t, s in zip(teacher, student)]
            updates += 1
            for expected, value in zip(teacher, got):
                np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
            student = after_step
    assert len(records) == 8 and traces[0] is traces[1]
    assert any(not np.allclose(a, b) for a, b in zip(records[-1][0], records[-1][1]))


@pytest.mark.skipif(
    BACKEND == "torch", reason="Keras's PyTorch trainer runs one step per execution"
)
def test_ema_update_is_the_same_with_several_steps_per_execution(regression_data):
    x, y = regression_data
    teachers = []
    for steps in (1, 2):
        keras.utils.set_random_seed(0)
        distiller = kd.SelfDistiller(
            make_regressor(4), "ema", kd.RegressionDistillation("mse"), ema_decay=0.6
        )
        distiller.compile(keras.optimizers.SGD(0.05), "mse", steps_per_execution=steps)
        distiller.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        teachers.append(distiller.teacher.get_weights())
    for a, b in zip(*teachers):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ema_teacher_is_not_updated_by_evaluation(regression_data):
    x, y = regression_data
    distiller = kd.SelfDistiller(
        make_regressor(4), "ema", kd.RegressionDistillation("mse")
    )
    distiller.compile(keras.optimizers.SGD(0.05), "mse")
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    teacher = distiller.teacher.get_weights()
    distiller.evaluate(x, y, verbose=0)
    distiller.compute_loss(x, y, training=False)
    for a, b in zip(distiller.teacher.get_weights(), teacher):
        np.testing.assert_array_equal(a, b)


def test_snapshot_taken_every_n_epochs_and_no_teacher_before(classification_data):
    x, y = classification_data
    model = make_classifier(8)
    initial = model.get_weights()
    distiller = kd.SelfDistiller(
        model, "snapshot", kd.LogitsDistillation(2.0), snapshot_interval=2
    )
    distiller.compile("adam", SPARSE_CE, run_eagerly=EAGER)
    teachers, students = [], []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            teachers.append(self.model.teacher.get_weights())

        def on_epoch_end(self, epoch, logs=None):
            students.append(self.model.student.get_weights())

    history = distiller.fit(
        x, y, epochs=5, batch_size=16, verbose=0, callbacks=[Record()]
    ).history
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
    distiller = kd.SelfDistiller(
        make_classifier(8), "snapshot", loss, progressive_alpha=0.8
    )
    distiller.compile("adam", SPARSE_CE, run_eagerly=EAGER)
    history = distiller.fit(x, y, epochs=4, batch_size=64, verbose=0).history
    # alpha_t = alpha_T * t / T with t = 1..T, and 0 before the first snapshot.
    expected_share = [0.0, 0.8 * 2 / 4, 0.8 * 3 / 4, 0.8 * 4 / 4]
    assert history["alpha"] == pytest.approx([1 - a for a in expected_share])
    short = kd.SelfDistiller(
        make_classifier(8), "ema", loss, progressive_alpha=0.5, progressive_epochs=2
    )
    short.compile("adam", SPARSE_CE, run_eagerly=EAGER)
    history = short.fit(x, y, epochs=3, batch_size=64, verbose=0).history
    assert history["alpha"] == pytest.approx([1 - 0.25, 1 - 0.5, 1 - 0.5])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_pskd_loss_is_the_loss_to_the_mixed_target(task):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 6)).astype("float32")
    if task == "classification":
        model, y = make_classifier(8), rng.integers(0, 3, size=8)
        student = rng.normal(size=(8, 3)).astype("float32")
        loss = kd.LogitsDistillation(1.0, loss="soft_cross_entropy")
        supervised = SPARSE_CE
    else:
        model, y = make_regressor(8), rng.normal(size=(8,)).astype("float32")
        student = rng.normal(size=(8, 1)).astype("float32")
        loss, supervised = kd.RegressionDistillation("mse"), "mse"
    distiller = kd.SelfDistiller(model, "snapshot", loss, progressive_alpha=0.8)
    distiller.compile("adam", supervised)
    distiller.refresh_teacher()
    share = distiller.progressive_share(epoch=2, total_epochs=5)
    assert share == pytest.approx(0.8 * 3 / 5)
    distiller.student_loss_weight = 1.0 - share  # what fit() assigns
    teacher = as_numpy(distiller.teacher(x))  # the refreshed model's logits
    value, (gradient,) = value_and_gradients(
        lambda s: distiller.compute_loss(x, y, s, training=False), student
    )
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
    losses = [
        kd.RegressionDistillation("huber", delta=0.5),
        kd.RegressionDistillation("teacher_bounded", margin=0.01),
    ]
    distiller = kd.SelfDistiller(make_regressor(16), "ema", losses)
    distiller.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    history = distiller.fit(x, y, epochs=4, batch_size=16, verbose=0).history
    assert (
        np.all(np.isfinite(history["loss"])) and history["mae"][-1] < history["mae"][0]
    )
    assert history["distillation_loss"][-1] > 0


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_hidden_layer_is_pulled_toward_the_teachers(
    task, classification_data, regression_data
):
    if task == "classification":
        (x, y), model = classification_data, make_classifier(8)
        losses, supervised = [kd.LogitsDistillation(2.0)], SPARSE_CE
    else:
        (x, y), model = regression_data, make_regressor(8)
        losses, supervised = [kd.RegressionDistillation("mse")], "mse"
    hint = kd.FeatureDistillation("mse", "model_hidden", "model_hidden")
    distiller = kd.SelfDistiller(
        model, "ema", losses + [hint], distillation_loss_weights=[0.0, 1.0]
    )
    distiller.compile(keras.optimizers.SGD(0.1), supervised)
    distiller.train_on_batch(x, y)
    value, gradient_norm = distillation_loss_and_gradient(distiller, x, y)

    def hidden(network):
        return keras.Model(network.input, network.get_layer("model_hidden").output)(x)

    expected = np.mean(
        (as_numpy(hidden(distiller.teacher)) - as_numpy(hidden(model))) ** 2
    )
    assert expected > 0 and gradient_norm > 0
    assert value == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"teacher": "ema", "ema_decay": 0.9, "student_loss_weight": 0.3},
        {
            "teacher": "snapshot",
            "snapshot_interval": 2,
            "progressive_alpha": 0.7,
            "progressive_epochs": 10,
        },
    ],
)
def test_config_and_keras_file_round_trip(kwargs, tmp_path, classification_data):
    x, y = classification_data
    distiller = kd.SelfDistiller(
        make_classifier(8), distillation_losses=kd.LogitsDistillation(2.0), **kwargs
    )
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"], run_eagerly=EAGER)
    distiller.fit(x, y, epochs=2, batch_size=64, verbose=0)
    config = distiller.get_config()
    rebuilt = kd.SelfDistiller.from_config(config)
    assert rebuilt.get_config() == config
    for key, value in kwargs.items():
        assert (
            config[key] == pytest.approx(value)
            if isinstance(value, float)
            else config[key] == value
        )
    path = tmp_path / "self_distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kd.SelfDistiller)
    assert loaded.teacher_ready == distiller.teacher_ready
    for a, b in zip(loaded.get_weights(), distiller.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(distiller(x)))
    loaded.fit(x, y, epochs=1, batch_size=64, verbose=0)  # compiled from the file


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"teacher": "ema", "ema_decay": 0.0}, ValueError, r"ema_decay in \(0, 1\)"),
        ({"teacher": "ema", "ema_decay": 1.0}, ValueError, r"ema_decay in \(0, 1\)"),
        ({"teacher": "ema", "ema_decay": -0.5}, ValueError, r"ema_decay in \(0, 1\)"),
        (
            {"teacher": "snapshot", "snapshot_interval": 0},
            ValueError,
            "snapshot_interval >= 1",
        ),
        ({"teacher": "snapshot", "snapshot_interval": 1.5}, TypeError, "integer >= 1"),
        (
            {"teacher": "snapshot", "ema_decay": 0.9},
            ValueError,
            'ema_decay applies to teacher="ema"',
        ),
        (
            {"teacher": "ema", "snapshot_interval": 2},
            ValueError,
            "snapshot_interval applies to",
        ),
        ({"teacher": "teacher"}, ValueError, "one of"),
        ({"progressive_alpha": 1.5}, ValueError, r"progressive_alpha .* in \(0, 1\]"),
        (
            {"progressive_alpha": 0.5, "student_loss_weight": 0.5},
            ValueError,
            "pass only one",
        ),
        ({"progressive_epochs": 5}, ValueError, "without progressive_alpha"),
        (
            {"progressive_alpha": 0.5, "progressive_epochs": 0},
            ValueError,
            "progressive_epochs >= 1",
        ),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        kd.SelfDistiller(
            make_classifier(4), distillation_losses=kd.LogitsDistillation(), **kwargs
        )


def test_bad_model_raises():
    with pytest.raises(TypeError, match="model to be a `keras.Model`"):
        kd.SelfDistiller("model", distillation_losses=kd.LogitsDistillation())
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="built model"):
        kd.SelfDistiller(unbuilt, distillation_losses=kd.LogitsDistillation())
    ema = kd.SelfDistiller(make_classifier(4), "snapshot", kd.LogitsDistillation())
    with pytest.raises(ValueError, match='teacher="ema" only'):
        ema.ema_decay = 0.5


@pytest.mark.tensorflow_only(
    reason="kerasdistill.cache_teacher_outputs builds a tf.data cache"
)
def test_cached_teacher_outputs_are_refused(classification_data):
    x, y = classification_data
    distiller = kd.SelfDistiller(make_classifier(8), "ema", kd.LogitsDistillation(2.0))
    distiller.compile("adam", SPARSE_CE)
    cached = kd.cache_teacher_outputs(distiller.teacher, (x, y), batch_size=16)
    with pytest.raises(ValueError, match="would be stale"):
        distiller.fit(cached, epochs=1, verbose=0)


def softmax_classifier(width):
    return make_classifier(width, activation="softmax")


@pytest.mark.parametrize(
    "build, loss, progressive, expected_type, expected_config",
    [
        (
            make_classifier,
            SPARSE_CE,
            False,
            kd.LogitsDistillation,
            {"temperature": 1.0, "loss": "kl_divergence", "from_logits": True},
        ),
        (
            make_classifier,
            SPARSE_CE,
            True,
            kd.LogitsDistillation,
            {"temperature": 1.0, "loss": "soft_cross_entropy", "from_logits": True},
        ),
        (
            softmax_classifier,
            "sparse_categorical_crossentropy",
            False,
            kd.LogitsDistillation,
            {"temperature": 1.0, "loss": "kl_divergence", "from_logits": False},
        ),
        (
            make_classifier,
            keras.losses.CategoricalCrossentropy(from_logits=True),
            False,
            kd.LogitsDistillation,
            {"loss": "kl_divergence", "from_logits": True},
        ),
        (make_regressor, "mse", False, kd.RegressionDistillation, {"loss": "mse"}),
        (
            make_regressor,
            keras.losses.MeanAbsoluteError(),
            False,
            kd.RegressionDistillation,
            {"loss": "mae"},
        ),
        (
            make_regressor,
            keras.losses.Huber(delta=2.5),
            True,
            kd.RegressionDistillation,
            {"loss": "huber", "delta": 2.5},
        ),
        (
            make_regressor,
            "huber",
            False,
            kd.RegressionDistillation,
            {"loss": "huber", "delta": 1.0},
        ),
    ],
)
def test_distillation_loss_is_chosen_from_the_compiled_loss(
    build, loss, progressive, expected_type, expected_config
):
    model = build(8)
    kwargs = {"progressive_alpha": 0.8} if progressive else {}
    distiller = kd.SelfDistiller(model, "ema", **kwargs)
    assert distiller.distillation_losses == []
    assert distiller.get_config()["distillation_losses"] is None  # still to choose
    distiller.compile("adam", loss)
    (chosen,) = distiller.distillation_losses
    assert type(chosen) is expected_type
    config = chosen.get_config()
    for key, value in expected_config.items():
        assert (
            config[key] == pytest.approx(value)
            if isinstance(value, float)
            else (config[key] == value)
        )
    distiller.compile("adam", loss)  # compiling again keeps the choice
    assert distiller.distillation_losses == [chosen]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    if isinstance(loss, keras.losses.CategoricalCrossentropy):
        y = np.eye(3, dtype="float32")[rng.integers(0, 3, 32)]
    elif expected_type is kd.LogitsDistillation:
        y = rng.integers(0, 3, 32)
    else:
        y = rng.normal(size=(32,)).astype("float32")
    history = distiller.fit(x, y, epochs=2, batch_size=16, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["distillation_loss"][-1] > 0
    if expected_type is kd.LogitsDistillation:
        assert history["temperature"] == pytest.approx([1.0, 1.0])
    rebuilt = kd.SelfDistiller.from_config(distiller.get_config())
    assert rebuilt.get_config() == distiller.get_config()
    assert type(rebuilt.distillation_losses[0]) is expected_type


@pytest.mark.parametrize(
    "loss, match",
    [
        (None, "chooses its distillation loss"),
        ("binary_crossentropy", "Pass distillation_losses"),
        (keras.losses.MeanSquaredLogarithmicError(), "Pass distillation_losses"),
        ({"model_logits": SPARSE_CE}, "Pass distillation_losses"),
    ],
)
def test_losses_the_distillation_loss_cannot_be_chosen_from_are_refused(loss, match):
    distiller = kd.SelfDistiller(make_classifier(8))
    with pytest.raises(ValueError, match=match):
        distiller.compile("adam", loss)


def test_a_chosen_loss_is_kept_and_a_loss_of_another_kind_refused():
    distiller = kd.SelfDistiller(make_regressor(8), "ema")
    distiller.compile("adam", "mse")
    with pytest.raises(ValueError, match="chose its distillation loss from before"):
        distiller.compile("adam", "mae")
    classifier = kd.SelfDistiller(make_classifier(8), "ema")
    classifier.compile("adam", SPARSE_CE)
    (chosen,) = classifier.distillation_losses
    chosen.temperature = 3.0  # as a TemperatureScheduler would
    classifier.compile("sgd", SPARSE_CE)  # same kind of loss: kept
    assert classifier.distillation_losses == [chosen]
    with pytest.raises(ValueError, match="chose its distillation loss from before"):
        classifier.compile(
            "adam", "sparse_categorical_crossentropy"
        )  # from_logits=False
    with pytest.raises(ValueError, match="distillation_loss_weights only with"):
        kd.SelfDistiller(make_regressor(8), distillation_loss_weights=[2.0])


def test_a_chosen_loss_is_saved_with_the_model(tmp_path, classification_data):
    x, y = classification_data
    distiller = kd.SelfDistiller(make_classifier(8), "ema", ema_decay=0.9)
    distiller.compile("adam", SPARSE_CE, run_eagerly=EAGER)
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    distiller.distillation_losses[0].temperature = 2.0
    distiller.save(tmp_path / "chosen.keras")
    loaded = keras.saving.load_model(tmp_path / "chosen.keras")
    (loss,) = loaded.distillation_losses
    assert isinstance(loss, kd.LogitsDistillation) and loss.from_logits
    assert float(as_numpy(loss.temperature)) == 2.0
    for a, b in zip(loaded.get_weights(), distiller.get_weights()):
        np.testing.assert_array_equal(a, b)
    logs = float_logs(loaded.evaluate(x, y, verbose=0, return_dict=True))
    assert logs == pytest.approx(
        float_logs(distiller.evaluate(x, y, verbose=0, return_dict=True))
    )


def test_a_users_alpha_scheduler_is_honoured_without_progressive_alpha(
    classification_data,
):
    x, y = classification_data
    distiller = kd.SelfDistiller(
        make_classifier(8), "snapshot", kd.LogitsDistillation(2.0)
    )
    distiller.compile("adam", SPARSE_CE)
    scheduler = kd.callbacks.AlphaScheduler(
        kd.schedules.Piecewise([1, 2], [0.9, 0.6, 0.3])
    )
    history = distiller.fit(
        x, y, epochs=3, batch_size=32, verbose=0, callbacks=[scheduler]
    ).history
    assert history["alpha"] == pytest.approx([0.9, 0.6, 0.3])
    assert (
        history["distillation_loss"][0] == 0.0 and history["distillation_loss"][1] > 0
    )


def test_an_alpha_scheduler_with_progressive_alpha_is_refused(classification_data):
    x, y = classification_data
    distiller = kd.SelfDistiller(make_classifier(8), "snapshot", progressive_alpha=0.8)
    distiller.compile("adam", SPARSE_CE)
    scheduler = kd.callbacks.AlphaScheduler(kd.schedules.Piecewise([1], [0.9, 0.5]))
    with pytest.raises(
        ValueError, match="Expected no AlphaScheduler.*Received: callbacks"
    ):
        distiller.fit(x, y, epochs=2, verbose=0, callbacks=[scheduler])
    with pytest.raises(ValueError, match="Expected no AlphaScheduler"):
        distiller.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=keras.callbacks.CallbackList([scheduler], model=distiller),
        )


def test_refresh_teacher_from_a_callback_mid_epoch(classification_data):
    # Under JAX the weights of a running fit() live in the compiled step's
    # state: refresh_teacher() syncs it before copying (the callback holds
    # the distiller itself, not `self.model`, which would sync too).
    x, y = classification_data
    distiller = kd.SelfDistiller(
        make_classifier(8),
        "snapshot",
        kd.LogitsDistillation(2.0),
        snapshot_interval=100,
    )
    distiller.compile(keras.optimizers.SGD(0.1), SPARSE_CE)
    copied = []

    class RefreshAfterSecondBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                distiller.refresh_teacher()
                copied.append(distiller.student.get_weights())

    initial = distiller.student.get_weights()
    history = distiller.fit(
        x,
        y,
        epochs=1,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[RefreshAfterSecondBatch()],
    ).history
    assert distiller.teacher_ready and history["distillation_loss"][0] > 0
    for teacher, student, start in zip(
        distiller.teacher.get_weights(), copied[0], initial
    ):
        np.testing.assert_array_equal(teacher, student)
        assert not np.array_equal(teacher, start)  # two steps were taken
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(distiller.student.get_weights(), copied[0])
    )  # and two more
