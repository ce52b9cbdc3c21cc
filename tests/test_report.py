"""kerasdistill.report, format_report and the plots, on every backend: the
models are trained and measured under the session's KERAS_BACKEND, and
tf.data inputs (read as numpy batches) work on each."""

import ast
import os

import keras
import numpy as np
import pytest
from matplotlib import image
from scipy.special import expit
from scipy.special import softmax
from sklearn.datasets import load_digits
from sklearn.datasets import make_friedman1
from sklearn.metrics import mean_absolute_error
from sklearn.metrics import mean_squared_error

import kerasdistill as kd
from kerasdistill.deploy import plots
from kerasdistill.deploy import reporting as report_module

EPOCHS = 4


def mlp(inputs, width, outputs, seed, activation=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(outputs, activation=activation),
        ]
    )


def fitted(model, x, y, loss):
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, y_train, x_test, y_test = x[:600], y[:600], x[1500:], y[1500:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = fitted(mlp(64, 64, 10, seed=0), x_train, y_train, loss)
    baseline = fitted(mlp(64, 8, 10, seed=1), x_train, y_train, loss)
    student = mlp(64, 8, 10, seed=1)
    distiller = kd.Distiller(
        teacher, student, kd.LogitsDistillation(3.0), student_loss_weight=0.8
    )
    distiller.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    alphas = [0.8, 0.6, 0.4, 0.2]
    anneal = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: setattr(
            distiller, "student_loss_weight", alphas[epoch]
        )
    )
    history = distiller.fit(
        x_train,
        y_train,
        epochs=EPOCHS,
        batch_size=32,
        verbose=0,
        validation_data=(x_test, y_test),
        callbacks=[anneal],
    )
    folder = str(tmp_path_factory.mktemp("classification"))
    figures = kd.report(
        teacher,
        student,
        (x_test, y_test),
        baseline=baseline,
        history=history,
        path=folder,
        latency_runs=5,
    )
    models = {"teacher": teacher, "baseline": baseline, "student": student}
    return dict(figures=figures, models=models, x=x_test, y=y_test, history=history)


@pytest.fixture(scope="module")
def friedman(tmp_path_factory):
    x, y = make_friedman1(n_samples=500, random_state=0)
    x, y = x.astype("float32"), y.astype("float32")
    x_train, y_train, x_test, y_test = x[:400], y[:400], x[400:], y[400:]
    teacher = fitted(mlp(10, 64, 1, seed=0), x_train, y_train, "mse")
    student = mlp(10, 4, 1, seed=1)
    distiller = kd.Distiller(teacher, student, kd.RegressionDistillation("mse"))
    distiller.compile(optimizer="adam", loss="mse")
    distiller.fit(x_train, y_train, epochs=EPOCHS, batch_size=32, verbose=0)
    baseline = fitted(mlp(10, 4, 1, seed=1), x_train, y_train, "mse")
    folder = str(tmp_path_factory.mktemp("regression"))
    figures = kd.report(
        teacher,
        student,
        (x_test, y_test),
        baseline=baseline,
        path=folder,
        latency_runs=3,
    )
    models = {"teacher": teacher, "baseline": baseline, "student": student}
    return dict(figures=figures, models=models, x=x_test, y=y_test)


def predict(model, x):
    return model.predict(x, batch_size=64, verbose=0)


def count_params(model):
    return sum(int(np.prod(w.shape)) for w in model.weights)


def test_classification_figures_match_independent_values(digits):
    figures, x, y = digits["figures"], digits["x"], digits["y"]
    assert figures["task"] == "classification"
    assert figures["metric"] == "accuracy"
    assert figures["samples"] == len(y)
    assert figures["latency_batch_size"] == 32
    assert list(figures["models"]) == ["teacher", "baseline", "student"]
    teacher_classes = np.argmax(predict(digits["models"]["teacher"], x), axis=-1)
    for name, model in digits["models"].items():
        logits = predict(model, x)
        values = figures["models"][name]
        np.testing.assert_allclose(
            values["accuracy"], np.mean(np.argmax(logits, -1) == y)
        )
        np.testing.assert_allclose(
            values["mean_confidence"],
            np.mean(np.max(softmax(logits, axis=-1), -1)),
            rtol=1e-5,
        )
        assert values["params"] == count_params(model)
        assert np.isfinite(values["latency_ms"]) and values["latency_ms"] > 0
        if name == "teacher":
            assert "agreement" not in values
        else:
            np.testing.assert_allclose(
                values["agreement"], np.mean(np.argmax(logits, -1) == teacher_classes)
            )
    teacher, student = figures["models"]["teacher"], figures["models"]["student"]
    versus = figures["student_vs_teacher"]
    np.testing.assert_allclose(
        versus["param_ratio"], teacher["params"] / student["params"]
    )
    np.testing.assert_allclose(
        versus["size_ratio"], teacher["size_bytes"] / student["size_bytes"]
    )
    np.testing.assert_allclose(
        versus["speedup"], teacher["latency_ms"] / student["latency_ms"]
    )
    np.testing.assert_allclose(
        versus["metric_delta"], student["accuracy"] - teacher["accuracy"]
    )
    np.testing.assert_allclose(
        figures["student_vs_baseline"]["metric_delta"],
        student["accuracy"] - figures["models"]["baseline"]["accuracy"],
    )


def test_size_on_disk_excludes_optimizer_state(digits, tmp_path):
    figures, models = digits["figures"]["models"], digits["models"]
    # The student was never compiled: its own .keras file is the reference.
    models["student"].save(tmp_path / "student.keras")
    reference = os.path.getsize(tmp_path / "student.keras")
    np.testing.assert_allclose(figures["student"]["size_bytes"], reference, rtol=0.02)
    assert {values["size_format"] for values in figures.values()} == {"keras"}
    assert figures["student"]["size_bytes"] > 4 * count_params(models["student"])
    # The baseline has the student's architecture but a built Adam optimizer.
    np.testing.assert_allclose(figures["baseline"]["size_bytes"], reference, rtol=0.02)
    models["baseline"].save(tmp_path / "baseline.keras")
    with_optimizer = os.path.getsize(tmp_path / "baseline.keras")
    assert with_optimizer > 1.5 * figures["baseline"]["size_bytes"]


class Subclassed(keras.Model):
    """Keras cannot save it as .keras: it has no get_config()."""

    def __init__(self, width):
        super().__init__()
        self.hidden = keras.layers.Dense(width, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, x):
        return self.out(self.hidden(x))


def test_unsavable_model_is_measured_by_its_weights_with_a_warning(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.arange(32) % 3
    teacher = Subclassed(16)
    teacher.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    teacher.fit(x, y, epochs=1, verbose=0)  # builds an Adam optimizer
    student = mlp(4, 2, 3, seed=0)
    with pytest.warns(UserWarning, match="teacher as a .keras file .*get_config"):
        figures = kd.report(teacher, student, (x, y), latency_runs=1)
    values = figures["models"]["teacher"]
    assert values["size_format"] == "npz"
    assert figures["models"]["student"]["size_format"] == "keras"
    weights = sum(w.nbytes for w in teacher.get_weights())
    assert weights < values["size_bytes"] < weights + 2048  # no optimizer slots
    np.testing.assert_allclose(
        values["accuracy"], np.mean(np.argmax(predict(teacher, x), -1) == y)
    )


def test_latency_is_the_median_of_timed_runs_after_warmup(monkeypatch):
    clock = {"now": 0.0}
    durations = iter([9.0, 9.0, 0.004, 0.001, 0.003, 0.010, 0.002])

    class FakeModel:
        calls = 0

        def predict_on_batch(self, x):
            FakeModel.calls += 1
            clock["now"] += next(durations)

    monkeypatch.setattr(report_module.time, "perf_counter", lambda: clock["now"])
    latency = report_module._latency_ms(FakeModel(), np.zeros((2, 3)), runs=5)
    assert FakeModel.calls == 7
    np.testing.assert_allclose(latency, 3.0)  # median of 4, 1, 3, 10, 2 ms


def assert_valid_png(file):
    with open(file, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(file) < 150_000
    pixels = image.imread(file)[..., :3]
    height, width, _ = pixels.shape
    assert height >= 300 and width >= 500
    codes = np.round(pixels * 255).astype("int64") @ np.array([65536, 256, 1])
    assert len(np.unique(codes)) > 50
    drawn = np.mean(np.any(pixels < 0.9, axis=-1))
    assert 0.02 < drawn < 0.9


def test_writes_valid_non_trivial_pngs_and_markdown(digits):
    files = digits["figures"]["files"]
    folder = os.path.dirname(files["markdown"])
    pngs = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    assert pngs == ["accuracy_vs_size.png", "confidence.png", "training.png"]
    for name in pngs:
        assert_valid_png(os.path.join(folder, name))
    with open(files["markdown"], encoding="utf-8") as handle:
        markdown = handle.read()
    for name, values in digits["figures"]["models"].items():
        assert f"| {name} | {values['params']:,} |" in markdown
        assert f"{values['accuracy']:.3f}" in markdown
    for name in pngs:
        assert f"]({name})" in markdown


def test_format_report_renders_one_row_per_model(digits):
    figures = digits["figures"]
    text = kd.format_report(figures)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    assert header.split() == [
        "model",
        "params",
        "size",
        "(KB)",
        "latency",
        "(ms)",
        "accuracy",
        "agreement",
    ]
    for name, values in figures["models"].items():
        row = next(line for line in lines if line.startswith(name + " ")).split()
        assert row[1] == f"{values['params']:,}"
        assert row[2] == f"{values['size_bytes'] / 1024:.1f}"
        assert row[4] == f"{values['accuracy']:.3f}"
        assert row[5] == ("-" if name == "teacher" else f"{values['agreement']:.3f}")
    assert (
        f"{figures['student_vs_teacher']['param_ratio']:.1f}x fewer parameters" in text
    )
    assert "alpha 0.8 -> 0.2 (scheduled)" in text
    assert "temperature 3 (constant)" in text


def test_training_summary_and_curves_follow_the_history(digits):
    logs = digits["history"].history
    summary = digits["figures"]["training"]
    assert summary["epochs"] == EPOCHS
    np.testing.assert_allclose(summary["scheduled"]["alpha"], [0.8, 0.2], rtol=1e-6)
    assert list(summary["scheduled"]) == ["alpha"]
    np.testing.assert_allclose(summary["constant"]["temperature"], 3.0)
    np.testing.assert_allclose(
        summary["final"]["val_accuracy"], logs["val_accuracy"][-1]
    )

    figure = plots.training_curves(plots.history_dict(digits["history"]))
    loss_axes, alpha_axes, metric_axes = figure.axes
    lines = {line.get_label(): line for line in loss_axes.get_lines()}
    for key in ("loss", "student_loss", "distillation_loss", "val_student_loss"):
        np.testing.assert_allclose(lines[key].get_ydata(), logs[key], rtol=1e-6)
        np.testing.assert_allclose(lines[key].get_xdata(), np.arange(1, EPOCHS + 1))
    (alpha_line,) = alpha_axes.get_lines()
    assert alpha_axes.get_ylabel() == "alpha"
    np.testing.assert_allclose(alpha_line.get_ydata(), [0.8, 0.6, 0.4, 0.2], rtol=1e-6)
    metric_lines = {line.get_label(): line for line in metric_axes.get_lines()}
    assert set(metric_lines) == {"accuracy", "val_accuracy"}
    np.testing.assert_allclose(
        metric_lines["val_accuracy"].get_ydata(), logs["val_accuracy"]
    )


def test_training_curves_space_sparse_validation_and_skip_constant_schedules():
    logs = {
        "loss": [3.0, 2.0, 1.5, 1.0],
        "val_loss": [2.5, 1.2],  # validation_freq=2
        "alpha": [0.5] * 4,
        "temperature": [4.0, 3.0, 2.0, 1.0],
    }
    figure = plots.training_curves(logs)
    loss_axes, temperature_axes = figure.axes  # no metrics, alpha constant
    lines = {line.get_label(): line for line in loss_axes.get_lines()}
    np.testing.assert_allclose(lines["val_loss"].get_xdata(), [2.0, 4.0])
    assert temperature_axes.get_ylabel() == "temperature"


def test_history_is_a_history_or_its_dict(digits):
    history = digits["history"]
    assert plots.history_dict(history) == plots.history_dict(history.history)
    with pytest.raises(TypeError, match="keras.callbacks.History"):
        plots.history_dict([1.0, 2.0])
    with pytest.raises(ValueError, match="at least one epoch"):
        plots.history_dict({"loss": []})


def test_regression_models_get_regression_metrics(friedman):
    figures, x, y = friedman["figures"], friedman["x"], friedman["y"]
    assert figures["task"] == "regression"
    assert figures["metric"] == "rmse"
    teacher = predict(friedman["models"]["teacher"], x)[:, 0]
    for name, model in friedman["models"].items():
        values = figures["models"][name]
        assert "accuracy" not in values and "mean_confidence" not in values
        prediction = predict(model, x)[:, 0]
        np.testing.assert_allclose(
            values["mae"], mean_absolute_error(y, prediction), rtol=1e-5
        )
        np.testing.assert_allclose(
            values["rmse"], np.sqrt(mean_squared_error(y, prediction)), rtol=1e-5
        )
        if name != "teacher":
            np.testing.assert_allclose(
                values["rmse_to_teacher"],
                np.sqrt(mean_squared_error(teacher, prediction)),
                rtol=1e-5,
            )
    student, baseline = figures["models"]["student"], figures["models"]["baseline"]
    np.testing.assert_allclose(
        figures["student_vs_baseline"]["metric_delta"],
        student["rmse"] - baseline["rmse"],
    )
    folder = os.path.dirname(figures["files"]["markdown"])
    pngs = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    assert pngs == ["error_vs_size.png", "errors.png"]
    for name in pngs:
        assert_valid_png(os.path.join(folder, name))
    text = kd.format_report(figures)
    assert "RMSE to teacher" in text and "accuracy" not in text
    assert "(lower is better)" in text


def test_dataset_gives_the_figures_of_the_arrays(digits):
    tf = pytest.importorskip("tensorflow")
    models, x, y = digits["models"], digits["x"], digits["y"]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    figures = kd.report(models["teacher"], models["student"], dataset, latency_runs=1)
    assert figures["latency_batch_size"] == 50
    assert figures["samples"] == len(y)
    for name in ("teacher", "student"):
        expected = digits["figures"]["models"][name]
        for key in ("accuracy", "mean_confidence", "params", "size_bytes"):
            np.testing.assert_allclose(
                figures["models"][name][key], expected[key], rtol=1e-5
            )
    assert "baseline" not in figures["models"] and "student_vs_baseline" not in figures
    assert "files" not in figures and "training" not in figures


@pytest.mark.parametrize(
    "labels, outputs, task",
    [
        (np.array([0, 2, 1]), np.zeros((3, 3)), "classification"),
        (np.array([[0], [2], [1]]), np.zeros((3, 3)), "classification"),
        (np.array([0.0, 2.0, 1.0]), np.zeros((3, 3)), "classification"),
        (np.eye(3)[[0, 2, 1]], np.zeros((3, 3)), "classification"),
        (np.array([0, 1, 1]), np.zeros((3, 1)), "regression"),
        (np.array([0.5, 2.0, 1.0]), np.zeros((3, 1)), "regression"),
        (np.array([0.5, 2.0, 1.0]), np.zeros((3,)), "regression"),
        (np.ones((3, 2)) * 2, np.zeros((3, 2)), "regression"),
        (np.random.default_rng(0).random((3, 2)), np.zeros((3, 2)), "regression"),
    ],
)
def test_task_is_inferred_from_label_and_output_shapes(labels, outputs, task):
    assert report_module._infer_task(labels, outputs) == task


def binary_models(activation):
    teacher = mlp(4, 8, 1, seed=2, activation=activation)
    student = mlp(4, 3, 1, seed=3, activation=activation)
    return teacher, student


@pytest.mark.parametrize("activation, threshold", [("sigmoid", 0.5), (None, 0.0)])
def test_single_output_is_regression_unless_told_classification(activation, threshold):
    x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    teacher, student = binary_models(activation)
    assert kd.report(teacher, student, (x, y), latency_runs=1)["task"] == "regression"
    figures = kd.report(teacher, student, (x, y), task="classification", latency_runs=1)
    assert figures["task"] == "classification"
    outputs = {
        "teacher": predict(teacher, x)[:, 0],
        "student": predict(student, x)[:, 0],
    }
    for name, output in outputs.items():
        values = figures["models"][name]
        np.testing.assert_allclose(
            values["accuracy"], np.mean((output > threshold) == y)
        )
        p = output if activation == "sigmoid" else expit(output)
        np.testing.assert_allclose(
            values["mean_confidence"], np.mean(np.maximum(p, 1 - p)), rtol=1e-5
        )
    np.testing.assert_allclose(
        figures["models"]["student"]["agreement"],
        np.mean((outputs["student"] > threshold) == (outputs["teacher"] > threshold)),
    )


def test_softmax_outputs_are_read_as_probabilities():
    x = np.random.default_rng(1).normal(size=(30, 4)).astype("float32")
    y = np.arange(30) % 3
    teacher = mlp(4, 8, 3, seed=4, activation="softmax")
    student = mlp(4, 3, 3, seed=5)  # logits
    figures = kd.report(teacher, student, (x, y), latency_runs=1)
    np.testing.assert_allclose(
        figures["models"]["teacher"]["mean_confidence"],
        np.mean(np.max(predict(teacher, x), axis=-1)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        figures["models"]["student"]["mean_confidence"],
        np.mean(np.max(softmax(predict(student, x), axis=-1), axis=-1)),
        rtol=1e-5,
    )


def test_invalid_arguments_raise_clear_errors():
    x = np.zeros((8, 4), "float32")
    y = np.arange(8) % 3
    teacher, student = mlp(4, 4, 3, seed=0), mlp(4, 2, 3, seed=1)
    with pytest.raises(ValueError, match="task"):
        kd.report(teacher, student, (x, y), task="ranking")
    with pytest.raises(TypeError, match=r"\(x, y\) tuple"):
        kd.report(teacher, student, x)
    with pytest.raises(TypeError, match="of length 3"):
        kd.report(teacher, student, (x, y, np.ones(8)))
    with pytest.raises(TypeError, match="keras.Model"):
        kd.report(teacher, student, (x, y), baseline="model")
    with pytest.raises(ValueError, match="same number"):
        kd.report(teacher, student, (x, y[:5]))
    with pytest.raises(ValueError, match="latency_runs"):
        kd.report(teacher, student, (x, y), latency_runs=0)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        kd.report(teacher, student, (x, y + 1), task="classification")
    inputs = keras.Input((4,))
    two_outputs = keras.Model(
        inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(3)(inputs)]
    )
    with pytest.raises(ValueError, match="single-output"):
        kd.report(teacher, two_outputs, (x, y))


def test_invalid_datasets_raise_clear_errors():
    tf = pytest.importorskip("tensorflow")
    x = np.zeros((8, 4), "float32")
    y = np.arange(8) % 3
    teacher, student = mlp(4, 4, 3, seed=0), mlp(4, 2, 3, seed=1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match="already batched"):
        kd.report(teacher, student, dataset.batch(4), batch_size=4)
    with pytest.raises(ValueError, match="repeat"):
        kd.report(teacher, student, dataset.batch(4).repeat())
    with pytest.raises(ValueError, match="unbatched"):
        kd.report(teacher, student, dataset)
    with pytest.raises(ValueError, match=r"\(x, y\) batches"):
        kd.report(teacher, student, dataset.map(lambda a, b: a).batch(4))


def test_backend_tensors_give_the_figures_of_the_arrays(digits):
    """(x, y) as tensors of the session's backend (torch tensors, jax
    arrays, tf tensors), as a user of that backend holds them."""
    models, x, y = digits["models"], digits["x"], digits["y"]
    tensors = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
    figures = kd.report(models["teacher"], models["student"], tensors, latency_runs=1)
    for name in ("teacher", "student"):
        expected = digits["figures"]["models"][name]
        for key in ("accuracy", "mean_confidence", "params"):
            np.testing.assert_allclose(
                figures["models"][name][key], expected[key], rtol=1e-5
            )


def test_total_loss_is_a_loss_drawn_only_when_it_differs():
    """keras.distillation's dialect logs `total_loss` beside `loss`; it is
    not a metric, and a copy of `loss` is not drawn twice."""
    logs = {
        "loss": [3.0, 2.0],
        "total_loss": [3.0, 2.0],
        "val_loss": [2.5, 1.5],
        "val_total_loss": [2.5, 1.5],
        "accuracy": [0.5, 0.7],
        "alpha": [0.8, 0.2],
        "val_alpha": [0.8, 0.2],
    }
    figure = plots.training_curves(logs)
    loss_axes, alpha_axes, metric_axes = figure.axes
    assert {line.get_label() for line in loss_axes.get_lines()} == {"loss", "val_loss"}
    assert {line.get_label() for line in metric_axes.get_lines()} == {"accuracy"}
    assert [line.get_label() for line in alpha_axes.get_lines()] == [
        "alpha (right axis)"
    ]
    assert list(plots.training_summary(logs)["scheduled"]) == ["alpha"]
    logs["total_loss"] = [4.0, 3.0]
    loss_axes = plots.training_curves(logs).axes[0]
    assert {line.get_label() for line in loss_axes.get_lines()} == {
        "loss",
        "val_loss",
        "total_loss",
    }


def test_modules_do_not_import_tensorflow_at_import_time():
    """`import kerasdistill` under JAX or PyTorch must not import
    TensorFlow: the report and the plots import nothing of it at module
    level (a tf.data dataset is recognised without importing it)."""
    for module in (report_module, plots):
        with open(module.__file__, encoding="utf-8") as file:
            body = ast.parse(file.read()).body
        names = [
            alias.name
            for node in body
            if isinstance(node, ast.Import)
            for alias in node.names
        ] + [node.module for node in body if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n and n.split(".")[0] == "tensorflow"], module
