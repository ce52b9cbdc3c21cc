"""The Distiller: frozen teacher, one pass per network, variables, weights,
labels or none, compile options, keras.distillation losses, saving."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import make_classifier
from conftest import make_regressor

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_distiller(teacher=None, student=None, losses=None, **kwargs):
    teacher = teacher or make_classifier(16, name="teacher")
    student = student or make_classifier(4, name="student")
    losses = losses or kd.LogitsDistillation(temperature=2.0)
    return kd.Distiller(teacher, student, losses, **kwargs)


def evaluate(model, *args, **kwargs):
    """`model.evaluate` as a dict of floats (Keras < 3.15 returns tensors)."""
    logs = model.evaluate(*args, verbose=0, return_dict=True, **kwargs)
    return {key: float(value) for key, value in logs.items()}


class CallCounter(keras.layers.Layer):
    """Identity layer counting its executions (in graph too) and traces."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="calls"
        )
        self.traces = 0
        self.training_flags = set()

    def call(self, x, training=None):
        self.traces += 1
        if not isinstance(x, keras.KerasTensor):
            self.training_flags.add(training)
        self.calls.assign_add(1.0)
        return x


def counted_classifier(width, name):
    inputs = keras.Input((6,))
    counter = CallCounter(name=f"{name}_counter")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(
        counter(inputs)
    )
    outputs = keras.layers.Dense(3, name=f"{name}_logits")(hidden)
    model = keras.Model(inputs, outputs, name=name)
    counter.training_flags.clear()  # forget the symbolic build
    return model, counter


def test_fit_logs_losses_alpha_temperature_and_metrics(classification_data):
    x, y = classification_data
    distiller = make_distiller(student_loss_weight=0.3)
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    history = distiller.fit(
        x, y, epochs=2, batch_size=16, verbose=0, validation_data=(x, y)
    ).history
    for key in (
        "loss",
        "student_loss",
        "distillation_loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "val_student_loss",
        "val_distillation_loss",
    ):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    assert history["alpha"] == pytest.approx([0.3, 0.3])
    assert history["temperature"] == pytest.approx([2.0, 2.0])


def test_loss_is_alpha_weighted_sum(classification_data):
    x, y = classification_data
    distiller = make_distiller(student_loss_weight=0.25)
    distiller.compile("adam", SPARSE_CE)
    logs = evaluate(distiller, x, y)
    teacher_logits = distiller.teacher.predict(x, verbose=0)
    student_logits = distiller.student.predict(x, verbose=0)
    student_loss = float(SPARSE_CE(y, student_logits))
    distillation = float(
        kd.LogitsDistillation(2.0).compute_loss(teacher_logits, student_logits)
    )
    assert logs["student_loss"] == pytest.approx(student_loss, rel=1e-4)
    assert logs["distillation_loss"] == pytest.approx(distillation, rel=1e-4)
    assert logs["loss"] == pytest.approx(
        0.25 * student_loss + 0.75 * distillation, rel=1e-4
    )


def test_teacher_is_frozen_and_run_in_inference_mode(classification_data):
    x, y = classification_data
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8)(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.Dropout(0.5)(hidden)
    teacher = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    assert teacher.trainable  # passed in trainable
    before = [w.copy() for w in teacher.get_weights()]
    distiller = make_distiller(teacher=teacher)
    distiller.compile("adam", SPARSE_CE)
    distiller.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)  # BN statistics included


def test_one_forward_pass_per_network_per_step(classification_data):
    x, y = classification_data
    teacher, teacher_counter = counted_classifier(16, "teacher")
    student, student_counter = counted_classifier(4, "student")
    losses = [
        kd.LogitsDistillation(2.0),
        kd.FeatureDistillation("mse", "teacher_logits", "student_logits"),
        kd.FeatureDistillation("mse", "teacher_counter", "student_counter"),
    ]
    distiller = kd.Distiller(teacher, student, losses)
    distiller.compile("adam", SPARSE_CE)
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)  # 4 steps
    assert float(teacher_counter.calls.numpy()) == 4
    assert float(student_counter.calls.numpy()) == 4
    assert teacher_counter.training_flags == {False}


def test_variables_change_the_loss_without_retracing(classification_data):
    x, y = classification_data
    student, counter = counted_classifier(4, "student")
    distiller = make_distiller(student=student, losses=[kd.LogitsDistillation(2.0)])
    distiller.compile("adam", SPARSE_CE)
    distiller.fit(x, y, epochs=1, batch_size=64, verbose=0)
    traces = counter.traces

    def one_epoch_loss():
        weights = distiller.get_weights()
        loss = distiller.fit(x, y, epochs=1, batch_size=64, verbose=0).history["loss"][
            0
        ]
        distiller.set_weights(weights)
        return loss

    base = one_epoch_loss()
    distiller.student_loss_weight = 0.0
    no_labels = one_epoch_loss()
    distiller.distillation_loss_weights = [3.0]
    tripled = one_epoch_loss()
    distiller.distillation_losses[0].temperature = 5.0
    hotter = one_epoch_loss()
    if BACKEND != "torch":  # PyTorch runs the step eagerly: nothing is traced
        assert counter.traces == traces
    assert no_labels != pytest.approx(base)
    assert tripled == pytest.approx(3 * no_labels, rel=1e-5)
    assert hotter != pytest.approx(tripled)
    assert all(
        not v.trainable
        for v in [
            distiller.student_loss_weight,
            *distiller.distillation_loss_weights,
            distiller.distillation_losses[0].temperature,
        ]
    )


def test_sample_weight_applies_to_student_and_distillation_terms(classification_data):
    x, y = classification_data
    weights = np.where(np.arange(len(x)) < 32, 1.0, 0.0).astype("float32")
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE, weighted_metrics=["accuracy"])
    weighted = evaluate(distiller, x, y, sample_weight=weights)
    half = evaluate(distiller, x[:32], y[:32])
    # sum_over_batch_size: zero-weighted samples count in the divisor.
    assert weighted["distillation_loss"] == pytest.approx(
        half["distillation_loss"] / 2, rel=1e-4
    )
    assert weighted["student_loss"] == pytest.approx(half["student_loss"] / 2, rel=1e-4)
    assert weighted["accuracy"] == pytest.approx(half["accuracy"], rel=1e-5)


def test_class_weight_equals_the_matching_sample_weight(classification_data):
    x, y = classification_data
    class_weight = {0: 0.2, 1: 1.0, 2: 3.0}
    results = []
    for kwargs in (
        {"class_weight": class_weight},
        {"sample_weight": np.array([class_weight[c] for c in y], "float32")},
    ):
        keras.utils.set_random_seed(3)
        distiller = make_distiller()
        distiller.compile("sgd", SPARSE_CE)
        history = distiller.fit(
            x, y, epochs=1, batch_size=64, shuffle=False, verbose=0, **kwargs
        )
        results.append(
            (history.history["distillation_loss"][0], distiller.student.get_weights())
        )
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_fit_without_labels_trains_on_distillation_alone(classification_data):
    x, _ = classification_data
    distiller = make_distiller(student_loss_weight=0.9)
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    before = distiller.student.get_weights()
    history = distiller.fit(
        x, epochs=3, batch_size=16, verbose=0, validation_data=classification_data
    ).history
    assert history["loss"] == pytest.approx(history["distillation_loss"])
    assert "student_loss" not in history and "accuracy" not in history
    assert len(history["val_accuracy"]) == 3
    assert history["loss"][-1] < history["loss"][0]
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(before, distiller.student.get_weights())
    )


def test_transfer_set_needs_no_compiled_loss(classification_data):
    x, y = classification_data
    distiller = make_distiller()
    distiller.compile("adam")
    distiller.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="no `loss` for the student"):
        distiller.fit(x, y, epochs=1, verbose=0)
    distiller.student_loss_weight = 0.0
    distiller.fit(x, y, epochs=1, verbose=0)  # labels are allowed with alpha=0


def test_evaluate_predict_and_call_use_the_student(classification_data):
    x, y = classification_data
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    expected = distiller.student.predict(x, verbose=0)
    np.testing.assert_allclose(distiller.predict(x, verbose=0), expected, rtol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distiller(x)), expected, rtol=1e-6
    )
    logs = evaluate(distiller, x, y)
    accuracy = np.mean(np.argmax(expected, -1) == y)
    assert logs["accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize(
    "compile_kwargs",
    [
        {"jit_compile": True},
        pytest.param(
            {"steps_per_execution": 3},
            marks=pytest.mark.skipif(
                BACKEND == "torch",
                reason="Keras's PyTorch trainer runs one step per execution",
            ),
        ),
    ],
)
def test_jit_compile_and_steps_per_execution(classification_data, compile_kwargs):
    x, y = classification_data
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE, **compile_kwargs)
    history = distiller.fit(x, y, epochs=3, batch_size=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


def test_mixed_float16_student_beside_float32_teacher(classification_data):
    x, y = classification_data
    teacher = make_classifier(16, name="teacher")
    keras.config.set_dtype_policy("mixed_float16")
    student = make_classifier(4, name="student")
    keras.config.set_dtype_policy("float32")
    distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(2.0))
    distiller.compile("adam", SPARSE_CE)
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.backend.standardize_dtype(distiller.student(x).dtype) == "float16"
    history = distiller.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    loss = distiller.compute_loss(x, y, None)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"


def test_regression_distillation_fits(regression_data):
    x, y = regression_data
    teacher = make_regressor(32, name="teacher")
    teacher.compile("adam", "mse")
    teacher.fit(x, y, epochs=20, verbose=0)
    distiller = kd.Distiller(
        teacher,
        make_regressor(4, name="student"),
        kd.RegressionDistillation("teacher_bounded", margin=0.1),
    )
    distiller.compile("adam", "mse", metrics=["mae"])
    history = distiller.fit(x, y, epochs=5, batch_size=16, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert "mae" in history


def test_keras_distillation_losses_are_accepted_and_correct(classification_data):
    x, y = classification_data
    teacher = make_classifier(16, name="teacher")
    student = make_classifier(4, name="student")
    distiller = kd.Distiller(
        teacher,
        student,
        [
            keras.distillation.LogitsDistillation(temperature=3.0),
            keras.distillation.FeatureDistillation(
                loss="mse",
                teacher_layer_name="teacher_logits",
                student_layer_name="student_logits",
            ),
        ],
    )
    assert isinstance(distiller.distillation_losses[0], kd.LogitsDistillation)
    assert isinstance(distiller.distillation_losses[1], kd.FeatureDistillation)
    distiller.compile("adam", SPARSE_CE)
    logs = evaluate(distiller, x, y)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    expected = float(kd.LogitsDistillation(3.0).compute_loss(t, s)) + np.mean(
        (t - s) ** 2
    )
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-4)


def test_custom_keras_distillation_loss_is_used_as_is(classification_data):
    x, y = classification_data

    class MeanGap(keras.distillation.DistillationLoss):
        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs))

    mean_gap = MeanGap()
    distiller = make_distiller(losses=mean_gap)
    wrapped = distiller.distillation_losses[0]
    assert isinstance(wrapped, kd.losses.keras_compat.KerasDistillationLoss)
    assert wrapped.loss is mean_gap
    assert (wrapped.teacher_layer_name, wrapped.temperature) == (None, None)
    distiller.compile("adam", SPARSE_CE)
    logs = evaluate(distiller, x, y)
    t = distiller.teacher.predict(x, verbose=0)
    s = distiller.student.predict(x, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(np.abs(t - s).mean(), rel=1e-4)
    with pytest.raises(ValueError, match="one value per batch"):
        distiller.fit(x, y, sample_weight=np.ones(len(x)), verbose=0)


def test_regularization_losses_of_the_student_only(classification_data):
    x, y = classification_data
    regularized = keras.regularizers.L2(10.0)
    inputs = keras.Input((6,))
    teacher = keras.Model(
        inputs, keras.layers.Dense(3, kernel_regularizer=regularized)(inputs)
    )
    distiller = make_distiller(teacher=teacher)
    distiller.compile("adam", SPARSE_CE)
    logs = evaluate(distiller, x, y)
    expected = 0.5 * logs["student_loss"] + 0.5 * logs["distillation_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_save_and_load_distiller(tmp_path, classification_data):
    x, y = classification_data
    distiller = make_distiller(
        losses=[
            kd.LogitsDistillation(3.0),
            kd.FeatureDistillation("mse", "teacher_logits", "student_logits"),
        ],
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=0.2,
    )
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    distiller.fit(x, y, epochs=1, verbose=0)
    distiller.distillation_losses[0].temperature = 1.5
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kd.Distiller)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0)
    )
    for a, b in zip(loaded.get_weights(), distiller.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(loaded.student_loss_weight.numpy()) == pytest.approx(0.2)
    assert float(loaded.distillation_losses[0].temperature.numpy()) == 1.5
    assert [float(w.numpy()) for w in loaded.distillation_loss_weights] == [1.0, 0.5]
    assert evaluate(loaded, x, y) == pytest.approx(evaluate(distiller, x, y))
    loaded.fit(x, y, epochs=1, verbose=0)  # compiled from the saved config


NEXT_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}


@pytest.mark.slow
def test_a_distiller_saved_under_another_backend_loads(tmp_path, classification_data):
    """The run on each backend loads a file saved under the next one, so CI's
    three runs cover tensorflow <- jax <- torch <- tensorflow."""
    x, _ = classification_data
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras, kerasdistill as kd\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from conftest import make_classifier\n"
        "x = np.load(sys.argv[1] + '/x.npy'); y = np.argmax(x[:, :3], 1)\n"
        "d = kd.Distiller(make_classifier(16, name='teacher'), make_classifier(4, name='student'),\n"
        "    [kd.LogitsDistillation(3.0), kd.FeatureDistillation('mse', 'teacher_hidden',\n"
        "     'student_hidden', adapter='auto')], student_loss_weight=0.3)\n"
        "d.compile('adam', keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
        "d.fit(x, y, epochs=1, verbose=0)\n"
        "d.distillation_losses[0].temperature = 1.5\n"
        "d.save(sys.argv[1] + '/d.keras')\n"
        "np.save(sys.argv[1] + '/expected.npy', d.predict(x, verbose=0))\n"
    )
    other = NEXT_BACKEND[BACKEND]
    env = dict(os.environ, KERAS_BACKEND=other)
    tests = os.path.dirname(__file__)
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), tests],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0),
        np.load(tmp_path / "expected.npy"),
        rtol=1e-5,
        atol=1e-6,
    )
    assert float(loaded.student_loss_weight.numpy()) == pytest.approx(0.3)
    assert float(loaded.distillation_losses[0].temperature.numpy()) == 1.5
    assert loaded.distillation_losses[1].adapter is not None
    loaded.fit(x, np.argmax(x[:, :3], 1), epochs=1, verbose=0)


def test_same_model_or_shared_layers_are_refused():
    model = make_classifier(8, name="model")
    with pytest.raises(ValueError, match="same model .* kerasdistill.SelfDistiller"):
        kd.Distiller(model, model, kd.LogitsDistillation())
    inputs = keras.Input((6,))
    hidden = model.get_layer("model_hidden")(inputs)  # the teacher's own layer
    student = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    with pytest.raises(ValueError, match="shares 2 weight.*clone_model.*set_weights"):
        kd.Distiller(model, student, kd.LogitsDistillation())


def test_raising_alpha_without_a_student_loss_is_refused(classification_data):
    x, y = classification_data
    distiller = make_distiller(student_loss_weight=0.0)
    distiller.compile("adam")  # no loss: fine while alpha is 0
    distiller.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="no `loss` for the student"):
        distiller.student_loss_weight = 0.5
    assert float(distiller.student_loss_weight.numpy()) == 0.0
    fresh = make_distiller(student_loss_weight=0.5)
    fresh.compile("adam")
    with pytest.raises(ValueError, match="no `loss` for the student"):
        fresh.fit(x, y, epochs=1, verbose=0)  # before training starts
    fresh.fit(x, epochs=1, verbose=0)  # a transfer set needs no loss


def test_compute_loss_uses_the_given_y_pred(classification_data):
    x, y = classification_data
    distiller = make_distiller(
        losses=[
            kd.LogitsDistillation(2.0),
            kd.FeatureDistillation("mse", "teacher_logits", "student_logits"),
        ],
        student_loss_weight=0.5,
    )
    distiller.compile("adam", SPARSE_CE)
    y_pred = distiller.student(x)
    shifted = keras.ops.convert_to_numpy(keras.ops.stop_gradient(y_pred)) * 2.0
    base = float(distiller.compute_loss(x, y, y_pred, training=False))
    other = float(distiller.compute_loss(x, y, shifted, training=False))
    assert other != pytest.approx(base)


def test_student_loads_without_kerasdistill(tmp_path, classification_data):
    x, y = classification_data
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE)
    distiller.fit(x, y, epochs=1, verbose=0)
    distiller.student.save(tmp_path / "student.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", distiller.student.predict(x, verbose=0))
    script = (
        "import sys, numpy as np, keras\n"
        "m = keras.saving.load_model(sys.argv[1] + '/student.keras')\n"
        "got = m.predict(np.load(sys.argv[1] + '/x.npy'), verbose=0)\n"
        "np.testing.assert_allclose(got, np.load(sys.argv[1] + '/expected.npy'), rtol=1e-6)\n"
        "assert 'kerasdistill' not in sys.modules\n"
    )
    env = dict(os.environ, PYTHONPATH="")
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], check=True, env=env, cwd=tmp_path
    )


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: kd.Distiller(
                "teacher", make_classifier(4), kd.LogitsDistillation()
            ),
            TypeError,
            "teacher to be a `keras.Model`",
        ),
        (
            lambda: kd.Distiller(make_classifier(8), None, kd.LogitsDistillation()),
            TypeError,
            "student to be a `keras.Model`",
        ),
        (
            lambda: make_distiller(student=make_classifier(4, classes=5)),
            ValueError,
            "same number of classes",
        ),
        (
            lambda: make_distiller(
                losses=kd.RegressionDistillation(),
                student=make_classifier(4, classes=2),
            ),
            ValueError,
            "same number of outputs",
        ),
        (lambda: make_distiller(student_loss_weight=1.5), ValueError, r"in \[0, 1\]"),
        (lambda: make_distiller(student_loss_weight=-0.1), ValueError, r"in \[0, 1\]"),
        (lambda: make_distiller(distillation_loss_weights=[-1.0]), ValueError, ">= 0"),
        (
            lambda: make_distiller(distillation_loss_weights=[1.0, 2.0]),
            ValueError,
            "one weight per distillation loss",
        ),
        (
            lambda: kd.Distiller(make_classifier(8), make_classifier(4), None),
            ValueError,
            "distillation_losses",
        ),
        (lambda: make_distiller(losses="kl"), TypeError, "DistillationLoss"),
        (
            lambda: make_distiller(student=make_classifier(4, features=7)),
            ValueError,
            "teacher to take the student's inputs",
        ),
        (
            lambda: make_distiller(teacher=make_classifier(8, activation="softmax")),
            ValueError,
            "from_logits=False",
        ),
        (
            lambda: make_distiller(
                losses=kd.FeatureDistillation(
                    "mse", "teacher_hidden", "student_hidden", adapter=None
                )
            ),
            ValueError,
            "same shape",
        ),
        (
            lambda: make_distiller(
                losses=kd.FeatureDistillation("mse", "teacher_hiden", None)
            ),
            ValueError,
            "Did you mean",
        ),
    ],
)
def test_bad_input_raises_before_training(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_teacher_that_cannot_take_student_inputs_at_first_step():
    class Teacher(keras.Model):  # subclassed: no symbolic inputs to compare
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    teacher = Teacher()
    teacher(np.zeros((1, 7), "float32"))
    distiller = kd.Distiller(teacher, make_classifier(4), kd.LogitsDistillation())
    distiller.compile("adam", SPARSE_CE)
    x = np.zeros((8, 6), "float32")
    y = np.zeros((8,), "int32")
    with pytest.raises(ValueError, match="teacher to accept the student's inputs"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_history_holds_numbers_after_validation_without_the_teacher(
    classification_data,
):
    """On JAX, History once held arrays that the next step deleted."""
    x, y = classification_data
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    distiller.evaluate_with_teacher = False
    history = distiller.fit(
        x, y, epochs=3, batch_size=16, verbose=0, validation_data=(x, y)
    ).history
    for key, values in history.items():
        assert len(values) == 3 and all(np.isfinite(float(v)) for v in values), key
    assert history["alpha"] == pytest.approx([0.5] * 3)
    assert "val_distillation_loss" not in history and "val_alpha" not in history


def test_history_keys_mean_one_thing(classification_data):
    x, y = classification_data
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    history = distiller.fit(
        x, y, epochs=1, batch_size=16, verbose=0, validation_data=(x, y)
    ).history
    assert set(history) == {
        "loss",
        "total_loss",  # keras.distillation's name for `loss`
        "student_loss",
        "distillation_loss",
        "accuracy",
        "alpha",
        "temperature",
        "val_loss",
        "val_total_loss",
        "val_student_loss",
        "val_distillation_loss",
        "val_accuracy",
    }
    assert history["total_loss"] == pytest.approx(history["loss"])


def test_each_distillation_term_is_logged_under_its_loss_name(classification_data):
    x, y = classification_data
    logits = kd.LogitsDistillation(2.0, name="soft_targets")
    hint = kd.FeatureDistillation(
        "mse", "teacher_hidden", "student_hidden", name="hint"
    )
    distiller = make_distiller(
        losses=[logits, hint], distillation_loss_weights=[1.0, 3.0]
    )
    distiller.compile("adam", SPARSE_CE)
    logs = evaluate(distiller, x, y, batch_size=len(x))
    assert logs["distillation_loss"] == pytest.approx(
        logs["soft_targets_loss"] + logs["hint_loss"], rel=1e-5
    )
    alone = float(
        kd.losses.base.loss_value(
            hint,
            distiller._teacher_feature_extractor(x)[1]["teacher_hidden"],
            distiller._student_feature_extractor(x)[1]["student_hidden"],
            y,
            None,
        )
    )
    assert logs["hint_loss"] == pytest.approx(3.0 * alone, rel=1e-4)


def test_log_names_do_not_depend_on_the_losses_made_before():
    # Keras numbers its layers per process; the logs' names must not follow.
    kd.FeatureDistillation("mse", "a", "b"), kd.LogitsDistillation(2.0)
    losses = [
        kd.LogitsDistillation(2.0),
        kd.FeatureDistillation("mse", "teacher_hidden", "student_hidden"),
        kd.FeatureDistillation("mse", "teacher_hidden", "student_hidden"),
        kd.FeatureDistillation("mse", "a", "b", name="feature_distillation_2"),
    ]
    assert kd.logs.loss_names(losses) == [
        "logits_distillation",
        "feature_distillation",
        "feature_distillation_2",
        "feature_distillation_2_2",
    ]
    assert kd.logs.loss_means(losses).names == [
        "student_loss",
        "distillation_loss",
        *[f"{name}_loss" for name in kd.logs.loss_names(losses)],
    ]


def test_loss_means_are_the_weighted_means_of_each_loss():
    means = kd.logs.LossMeans(["student_loss", "distillation_loss", "hint_loss"])
    means.update_state(
        {"student_loss": keras.ops.array(2.0), "distillation_loss": 1.0}, 4
    )
    means.update_state(
        {"student_loss": 5.0, "distillation_loss": 3.0, "hint_loss": 0.5},
        {"student_loss": keras.ops.array(2.0), "distillation_loss": 8},
    )
    result = {key: float(value) for key, value in means.result().items()}
    assert result == pytest.approx(
        {
            "student_loss": (2.0 * 4 + 5.0 * 2) / 6,
            "distillation_loss": (1.0 * 4 + 3.0 * 8) / 12,
            "hint_loss": 0.0,  # no weight yet
        }
    )
    means.reset_state()
    assert float(means.result()["student_loss"]) == 0.0
    restored = kd.logs.LossMeans.from_config(means.get_config())
    assert restored.names == means.names and restored.name == means.name


def test_a_transfer_set_has_one_objective_in_loss_and_val_loss(classification_data):
    x, y = classification_data
    distiller = make_distiller(student_loss_weight=0.5)
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    history = distiller.fit(
        x, epochs=2, batch_size=16, verbose=0, validation_data=(x, y)
    ).history
    assert not distiller.uses_labels
    assert history["val_loss"] == pytest.approx(history["val_distillation_loss"])
    assert "val_student_loss" in history and "val_accuracy" in history
    assert "alpha" not in history  # alpha is not applied without labels
    distiller.fit(x, y, epochs=1, verbose=0)  # labels again: alpha applies
    logs = evaluate(distiller, x, y)
    assert logs["loss"] == pytest.approx(
        0.5 * logs["student_loss"] + 0.5 * logs["distillation_loss"], rel=1e-5
    )


def test_call_returns_the_student_pass_in_training_only(classification_data):
    x, _ = classification_data
    distiller = make_distiller(
        losses=[kd.FeatureDistillation("mse", "teacher_hidden", "student_hidden")]
    )
    step = distiller(x, training=True)
    assert isinstance(step, kd.student_pass.StudentPass)
    assert set(step.features) == {"student_hidden"} and step.mixing is None
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(step.outputs),
        distiller.student.predict(x, verbose=0),
        rtol=1e-6,
    )
    assert not isinstance(distiller(x), tuple)


def test_losses_are_called_without_inspecting_signatures(
    classification_data, monkeypatch
):
    """The arguments a loss's `call` takes are read once per class, not at
    every call on the training path."""
    import inspect

    x, y = classification_data
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE)
    signature, inspected = inspect.signature, []

    def counting(target, *args, **kwargs):
        if "Distillation" in getattr(target, "__qualname__", ""):
            inspected.append(target.__qualname__)
        return signature(target, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting)
    distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
    distiller.evaluate(x, y, verbose=0)
    assert not inspected
