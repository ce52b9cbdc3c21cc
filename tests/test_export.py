"""export_student: SavedModel and TFLite exports, checked by running the
written files.

The tests without a marker run under the session's KERAS_BACKEND (CI runs
them under TensorFlow, JAX and PyTorch): a student trained there is exported
(under JAX and PyTorch through a TensorFlow subprocess, or jax2tf) and
checked against its own predictions. The converter settings (int8 tensor
types, sizes, overwrite, broken conversions) are the same TensorFlow code
whatever the backend, and are tested under TensorFlow only, where each
export costs no subprocess."""

import ast
import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

Interpreter = pytest.importorskip(  # The `export` extra.
    "ai_edge_litert.interpreter"
).Interpreter

import kerasdistill as kd  # noqa: E402
from kerasdistill.deploy import export as export_module  # noqa: E402
from kerasdistill.deploy import export_worker  # noqa: E402
from kerasdistill.deploy import tf_files  # noqa: E402

FEATURES, CLASSES = 6, 3
BACKEND = keras.backend.backend()
ROUTE = "tensorflow" if BACKEND == "tensorflow" else "tensorflow-subprocess"
# Converter behaviour, identical under every backend (the TensorFlow
# subprocess runs the same code); covered once, where it needs no subprocess.
CONVERTER = pytest.mark.tensorflow_only(
    reason="TFLite converter settings, the same TensorFlow code on every backend"
)


def _mlp(width, name):
    inputs = keras.Input((FEATURES,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(inputs)
    outputs = keras.layers.Dense(CLASSES, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="kerasdistill_tests")
class Scale(keras.layers.Layer):
    """A custom layer with a constructor argument (a .keras round trip needs
    its registration and get_config)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return self.factor * x

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="kerasdistill_tests")
class SubclassedStudent(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(CLASSES)

    def call(self, x):
        return self.dense(x)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, FEATURES)).astype("float32")
    y = np.argmax(x[:, :CLASSES], axis=1).astype("int32")
    return x, y


@pytest.fixture(scope="module")
def distiller(data):
    keras.utils.set_random_seed(0)
    x, y = data
    teacher = _mlp(512, "teacher")
    student = _mlp(16, "student")
    distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(2.0))
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    distiller.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return distiller


@pytest.fixture(scope="module")
def student(data):
    """A student trained on this backend by a plain fit()."""
    keras.utils.set_random_seed(0)
    x, y = data
    student = _mlp(16, "plain")
    student.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    student.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return student


def _run_tflite(path, x):
    """Runs a .tflite file independently of kerasdistill.export."""
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (name,) = runner.get_input_details()
    details = runner.get_input_details()[name]
    if details["dtype"] != np.float32:
        scale, zero = details["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(details["dtype"])
    ((out_name, out_details),) = runner.get_output_details().items()
    y = runner(**{name: x})[out_name]
    if out_details["dtype"] != np.float32:
        scale, zero = out_details["quantization"]
        y = (y.astype("float32") - zero) * scale
    return y


def _run_saved_model(path, x):
    tf = pytest.importorskip("tensorflow")
    loaded = tf.saved_model.load(str(path))  # kept alive while it runs
    return loaded.serve(tf.constant(x)).numpy()


def test_saved_model_holds_the_student_only(distiller, data, tmp_path):
    x, _ = data
    path = tmp_path / "student"
    report = kd.export_student(distiller, path, format="saved_model", sample_inputs=x)
    tf = pytest.importorskip("tensorflow")
    loaded = tf.saved_model.load(str(path))
    # Only the student's variables: no teacher.
    assert sorted(v.shape.as_list() for v in loaded.variables) == sorted(
        list(w.shape) for w in distiller.student.weights
    )
    expected = distiller.student.predict(x, verbose=0)
    actual = loaded.serve(tf.constant(x)).numpy()
    assert report.max_abs_diff == pytest.approx(
        np.max(np.abs(actual - expected)), abs=1e-6
    )
    assert report.relative_diff <= 1e-6
    assert report.top1_agreement == 1.0
    assert report.num_samples == len(x)
    assert (report.backend, report.route) == (BACKEND, ROUTE)
    assert report.format == "saved_model" and report.quantization is None
    assert report.bytes == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert "saved_model" in str(report)


@CONVERTER
@pytest.mark.parametrize("quantization", [None, "float16", "dynamic"])
def test_tflite_float_and_dynamic(distiller, data, tmp_path, quantization):
    x, _ = data
    path = tmp_path / "student.tflite"
    report = kd.export_student(
        distiller, path, format="tflite", quantization=quantization, sample_inputs=x
    )
    expected = distiller.student.predict(x, verbose=0)
    actual = _run_tflite(path, x)
    assert report.max_abs_diff == pytest.approx(np.max(np.abs(actual - expected)))
    assert report.relative_diff == pytest.approx(
        report.max_abs_diff / np.max(np.abs(expected))
    )
    assert (
        report.relative_diff
        <= {None: 1e-6, "float16": 1e-3, "dynamic": 1e-3}[quantization]
    )
    assert (
        report.tolerance == {None: 1e-4, "float16": 1e-2, "dynamic": 5e-2}[quantization]
    )
    assert report.top1_agreement == np.mean(actual.argmax(1) == expected.argmax(1))
    assert report.bytes == path.stat().st_size
    # No teacher tensor (its hidden layer has 512 units) in the file.
    tensors = Interpreter(model_path=str(path)).get_tensor_details()
    assert any(16 in d["shape"] for d in tensors)
    assert not any(512 in d["shape"] for d in tensors)
    assert report.bytes < 4 * distiller.teacher.count_params() / 4


@CONVERTER
def test_dynamic_quantization_shrinks_large_weights(data, tmp_path):
    keras.utils.set_random_seed(1)
    x, _ = data
    student = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )  # The 256x256 kernel dominates the size; dynamic stores it in int8.
    float32 = kd.export_student(student, tmp_path / "f.tflite", format="tflite")
    dynamic = kd.export_student(
        student,
        tmp_path / "d.tflite",
        format="tflite",
        quantization="dynamic",
        sample_inputs=x,
    )
    assert dynamic.bytes < 0.4 * float32.bytes
    assert 0 < dynamic.relative_diff <= 1e-2


@CONVERTER
def test_int8_full_integer(distiller, data, tmp_path):
    x, _ = data
    path = tmp_path / "student.tflite"
    report = kd.export_student(
        distiller,
        path,
        format="tflite",
        quantization="int8",
        representative_data=x,
    )
    expected = distiller.student.predict(x, verbose=0)
    actual = _run_tflite(path, x)
    assert report.num_samples == len(x)
    assert report.max_abs_diff == pytest.approx(np.max(np.abs(actual - expected)))
    assert 0 < report.relative_diff <= 0.05
    assert report.tolerance == 0.1
    assert report.top1_agreement >= 0.9
    # Full integer: weights and activations int8 (biases int32); float32 only
    # at the model's input and output (input_type / output_type default).
    interpreter = Interpreter(model_path=str(path))
    details = interpreter.get_tensor_details()
    floats = {d["index"] for d in details if d["dtype"] == np.float32}
    assert floats == {
        interpreter.get_input_details()[0]["index"],
        interpreter.get_output_details()[0]["index"],
    }
    assert {d["dtype"] for d in details} == {np.float32, np.int8, np.int32}
    assert sum(d["dtype"] == np.int8 and len(d["shape"]) == 2 for d in details) >= 4


@CONVERTER
def test_int8_input_and_output_types(distiller, data, tmp_path):
    import tensorflow as tf

    x, y = data
    path = tmp_path / "student.tflite"
    report = kd.export_student(
        distiller,
        path,
        format="tflite",
        quantization="int8",
        representative_data=tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
        input_type="int8",
        output_type="int8",
    )
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (input_details,) = runner.get_input_details().values()
    (output_details,) = runner.get_output_details().values()
    assert input_details["dtype"] == np.int8
    assert output_details["dtype"] == np.int8
    actual = _run_tflite(path, x)
    expected = distiller.student.predict(x, verbose=0)
    assert report.max_abs_diff == pytest.approx(np.max(np.abs(actual - expected)))
    assert 0 < report.relative_diff <= 0.05


@CONVERTER
def test_parity_failure_raises_and_keeps_the_file(distiller, data, tmp_path):
    import tensorflow as tf

    x, _ = data
    path = tmp_path / "student.tflite"
    with pytest.raises(ValueError, match="differs from the Keras student"):
        kd.export_student(
            distiller,
            path,
            format="tflite",
            quantization="int8",
            representative_data=tf.data.Dataset.from_tensor_slices(x),
            tolerance=1e-6,
        )
    assert path.exists()
    assert len(_run_tflite(path, x)) == len(x)


@pytest.mark.tensorflow_only(reason="patches Model.export in this process")
def test_nan_outputs_are_caught(distiller, data, tmp_path, monkeypatch):
    """A converter that silently writes a model with NaN outputs (here
    simulated: the written file is that of a copy whose bias is NaN)."""
    x, _ = data
    real_export = keras.Model.export

    def broken_export(model, filepath, **kwargs):
        broken = keras.models.clone_model(model)
        broken.set_weights(model.get_weights())
        kernel, bias = broken.layers[-1].get_weights()
        broken.layers[-1].set_weights([kernel, np.full_like(bias, np.nan)])
        return real_export(broken, filepath, **kwargs)

    monkeypatch.setattr(keras.Model, "export", broken_export)
    with pytest.raises(ValueError, match="NaN or infinite outputs on 128 of 128"):
        kd.export_student(
            distiller, tmp_path / "s.tflite", format="tflite", sample_inputs=x
        )


@CONVERTER
def test_float16_overflow_is_caught(data, tmp_path):
    """A weight beyond the float16 range: the file runs, but is wrong."""
    x, _ = data
    student = _mlp(4, "overflow")
    kernel, bias = student.layers[1].get_weights()
    kernel[0, 0] = 1e6
    student.layers[1].set_weights([kernel, bias])
    with pytest.raises(ValueError, match="differs from the Keras student"):
        kd.export_student(
            student,
            tmp_path / "s.tflite",
            format="tflite",
            quantization="float16",
            sample_inputs=x,
        )


@pytest.mark.tensorflow_only(reason="path handling, the same on every backend")
def test_overwrite(distiller, data, tmp_path):
    x, _ = data
    tflite = tmp_path / "s.tflite"
    tflite.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        kd.export_student(distiller, tflite, format="tflite")
    assert tflite.read_bytes() == b"old"
    report = kd.export_student(distiller, tflite, format="tflite", overwrite=True)
    assert report.bytes == tflite.stat().st_size > 3

    saved = tmp_path / "sm"
    kd.export_student(distiller, saved)
    (saved / "stale.txt").write_text("from an older export")
    with pytest.raises(FileExistsError, match="exists"):
        kd.export_student(distiller, saved)
    with pytest.raises(ValueError, match="batch of student inputs"):
        # Arguments are checked before anything at `path` is removed.
        kd.export_student(distiller, saved, overwrite=True, sample_inputs=x[:, :2])
    assert (saved / "stale.txt").exists()
    kd.export_student(distiller, saved, overwrite=True)
    assert not (saved / "stale.txt").exists()
    assert (saved / "saved_model.pb").exists()

    other = tmp_path / "not_a_saved_model"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not one"):
        kd.export_student(distiller, other, overwrite=True)
    assert (other / "notes.txt").exists()


def test_regressor_has_no_top1(tmp_path):
    inputs = keras.Input((FEATURES,))
    student = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    report = kd.export_student(student, tmp_path / "r.tflite", format="tflite")
    assert report.top1_agreement is None
    assert report.num_samples == 64  # generated standard normal inputs
    assert "top-1" not in str(report)


def test_fallback_interpreter_warns(student, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.warns(UserWarning, match="kerasdistill\\[export\\]"):
        report = kd.export_student(student, tmp_path / "s.tflite", format="tflite")
    assert report.relative_diff <= 1e-6


def test_subclassed_built_student(data, tmp_path):
    """No symbolic input: the signature comes from the build shape (in the
    subprocess too, after the .keras round trip)."""
    x, _ = data
    student = SubclassedStudent()
    student(x[:1])
    report = kd.export_student(
        student, tmp_path / "s.tflite", format="tflite", sample_inputs=x
    )
    assert report.relative_diff <= 1e-6
    assert report.num_samples == len(x)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"format": "onnx"}, ValueError, "`format` to be one of"),
        ({"format": "tflite", "quantization": "int4"}, ValueError, "quantization"),
        ({"quantization": "float16"}, ValueError, "TFLite exports only"),
        (
            {"format": "tflite", "quantization": "int8"},
            ValueError,
            "Expected `representative_data` with quantization='int8'",
        ),
        (
            {"format": "tflite", "input_type": "int8"},
            ValueError,
            "needs full-integer quantization",
        ),
        (
            {
                "format": "tflite",
                "quantization": "int8",
                "output_type": "uint8",
                "representative_data": np.zeros((2, FEATURES)),
            },
            ValueError,
            "`output_type` to be one of",
        ),
        ({"format": "tflite", "tolerance": 0}, ValueError, "tolerance > 0"),
        (
            {
                "format": "tflite",
                "quantization": "int8",
                "representative_data": np.zeros((4, FEATURES + 1)),
            },
            ValueError,
            r"\(n,\) \+ \(6,\)",
        ),
        (
            {
                "format": "tflite",
                "quantization": "int8",
                "representative_data": np.full((4, FEATURES), np.inf),
            },
            ValueError,
            "finite",
        ),
        ({"via": "onnx"}, ValueError, "`via` to be one of"),
    ],
)
def test_bad_arguments(student, tmp_path, kwargs, error, message):
    suffix = ".tflite" if kwargs.get("format") == "tflite" else ""
    with pytest.raises(error, match=message):
        kd.export_student(student, tmp_path / f"s{suffix}", **kwargs)
    assert not os.listdir(tmp_path)  # refused before anything is written


def test_bad_student_and_path(student, tmp_path):
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="built student"):
        kd.export_student(unbuilt, tmp_path / "s")
    with pytest.raises(TypeError, match="keras.Model"):
        kd.export_student("student.keras", tmp_path / "s")
    with pytest.raises(ValueError, match="ending in '.tflite'"):
        kd.export_student(student, tmp_path / "s.lite", format="tflite")
    inputs = keras.Input((2,))
    two_outputs = keras.Model(
        inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(2)(inputs)]
    )
    with pytest.raises(ValueError, match="one output tensor"):
        kd.export_student(two_outputs, tmp_path / "s")


@pytest.mark.tensorflow_only(reason="a tf.linalg op in a Lambda layer")
def test_file_that_the_interpreter_cannot_run(tmp_path):
    """A student with an op outside the TFLite builtins needs the Flex
    delegate, which the LiteRT interpreter does not link."""
    import tensorflow as tf

    inputs = keras.Input((3, 3))
    outputs = keras.layers.Lambda(lambda m: tf.linalg.det(m)[:, None])(inputs)
    student = keras.Model(inputs, outputs)
    path = tmp_path / "s.tflite"
    with pytest.raises(RuntimeError, match="does not run in the interpreter"):
        kd.export_student(student, path, format="tflite")
    assert path.exists()


# A student trained on the session's backend, exported and checked against
# its own predictions there: these run under TensorFlow, JAX and PyTorch.

_BOUNDS = {None: 1e-6, "float16": 1e-3, "dynamic": 1e-3, "int8": 0.05}


@pytest.mark.parametrize(
    "format, quantization",
    [
        ("saved_model", None),
        ("tflite", None),
        ("tflite", "float16"),
        ("tflite", "dynamic"),
        ("tflite", "int8"),
    ],
)
def test_student_trained_on_this_backend_exports(
    student, data, tmp_path, format, quantization
):
    x, _ = data
    path = tmp_path / ("student.tflite" if format == "tflite" else "student")
    report = kd.export_student(
        student,
        path,
        format=format,
        quantization=quantization,
        representative_data=x if quantization == "int8" else None,
        sample_inputs=x,
    )
    assert (report.backend, report.route) == (BACKEND, ROUTE)
    if BACKEND != "tensorflow":  # the report names where a file came from
        assert BACKEND in str(report) and ROUTE in str(report)
    # The written file, run here without kerasdistill, against the student's
    # predictions in this backend.
    expected = student.predict(x, verbose=0)
    actual = (_run_tflite if format == "tflite" else _run_saved_model)(path, x)
    assert report.max_abs_diff == pytest.approx(
        np.max(np.abs(actual - expected)), rel=1e-3, abs=1e-6
    )
    assert report.relative_diff <= _BOUNDS[quantization]
    assert report.top1_agreement >= (1.0 if quantization in (None, "float16") else 0.9)
    assert report.num_samples == len(x)
    if format == "tflite":
        assert report.bytes == path.stat().st_size
        interpreter = Interpreter(model_path=str(path))
        kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
        assert (np.int8 in kinds) == (quantization == "int8")
        assert (np.float16 in kinds) == (quantization == "float16")
    else:
        assert (path / "saved_model.pb").exists()


def test_custom_layers_and_lambdas_survive_the_route(data, tmp_path):
    """A registered custom layer (with a constructor argument) and a Lambda:
    under JAX and PyTorch the .keras copy is rebuilt in the TensorFlow
    subprocess, which imports this module to register `Scale`. (A Lambda
    loaded from a .keras file needs its output_shape, and sees none of its
    module's globals, keras included: Keras' own limits.)"""
    x, y = data
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    hidden = Scale(0.5)(hidden)
    hidden = keras.layers.Lambda(lambda t: t * t - t, output_shape=(8,))(hidden)
    student = keras.Model(inputs, keras.layers.Dense(CLASSES)(hidden))
    student.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    student.fit(x, y, epochs=1, batch_size=32, verbose=0)
    report = kd.export_student(
        student, tmp_path / "s.tflite", format="tflite", sample_inputs=x
    )
    assert report.relative_diff <= 1e-6
    actual = _run_tflite(tmp_path / "s.tflite", x)
    np.testing.assert_allclose(actual, student.predict(x, verbose=0), atol=1e-5)


def test_regressor_with_a_dropout_layer(tmp_path):
    """Dropout (a seed-generator state under JAX) is inert at inference and
    does not reach the file; a regressor reports no top-1."""
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dropout(0.5)(keras.layers.Dense(8)(inputs))
    student = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    report = kd.export_student(student, tmp_path / "r.tflite", format="tflite")
    assert report.top1_agreement is None and report.relative_diff <= 1e-6


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow exports in process")
def test_classes_of_main_are_refused_before_the_subprocess(tmp_path):
    @keras.saving.register_keras_serializable(package="kerasdistill_tests_main")
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    Doubling.__module__ = "__main__"  # as if defined in the running script
    inputs = keras.Input((FEATURES,))
    student = keras.Model(inputs, Doubling()(keras.layers.Dense(2)(inputs)))
    with pytest.raises(
        ValueError, match="kerasdistill_tests_main>Doubling is defined in __main__"
    ):
        kd.export_student(student, tmp_path / "s.tflite", format="tflite")
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow exports in process")
def test_a_student_keras_cannot_save_is_refused(tmp_path):
    class Wrapper(keras.Model):  # a layer argument: no automatic get_config
        def __init__(self, layer):
            super().__init__()
            self.inner = layer

        def call(self, x):
            return self.inner(x)

    student = Wrapper(keras.layers.Dense(2))
    student(np.zeros((1, FEATURES), "float32"))
    with pytest.raises(ValueError, match="(?s)can save to a .keras file.*get_config"):
        kd.export_student(student, tmp_path / "s.tflite", format="tflite")
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow exports in process")
def test_a_student_the_subprocess_cannot_load_is_explained(tmp_path):
    class Unregistered(keras.layers.Layer):  # not importable: a local class
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((FEATURES,))
    student = keras.Model(inputs, Unregistered()(keras.layers.Dense(2)(inputs)))
    with pytest.raises(
        ValueError,
        match="(?s)could not load it.*Could not locate class 'Unregistered'.*register_keras_serializable",
    ):
        kd.export_student(student, tmp_path / "s.tflite", format="tflite")


@pytest.mark.slow  # starts the subprocess a second time
@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow exports in process")
def test_the_export_subprocess_is_reused_and_replaced(student, tmp_path, monkeypatch):
    """One TensorFlow subprocess serves the exports of a session; one that
    died is reported with its log and replaced by the next export; one
    that imported a module since changed on disk is replaced too."""
    worker = export_worker._WORKER
    kd.export_student(student, tmp_path / "a.tflite", format="tflite")
    first = worker._process
    kd.export_student(student, tmp_path / "b.tflite", format="tflite")
    assert worker._process is first and first.poll() is None
    with pytest.raises(
        RuntimeError,
        match="(?s)stopped \\(exit status 1\\) without a result.*FileNotFoundError.*result.json",
    ):
        worker.run(str(tmp_path / "no-such-folder"), [], BACKEND)  # dies writing there
    assert first.poll() is not None and worker._process is None
    report = kd.export_student(student, tmp_path / "c.tflite", format="tflite")
    assert report.relative_diff <= 1e-6 and worker._process.poll() is None
    worker._imported = {"test_export": -1.0}
    assert worker._stale(["test_export"]) and not worker._stale(["other"])


@pytest.mark.skipif(BACKEND != "jax", reason="Keras' JAX export (jax2tf)")
def test_jax2tf_route(student, data, tmp_path):
    """via='backend' under JAX: Keras' jax2tf export in this process, no
    .keras round trip."""
    x, _ = data
    saved = kd.export_student(student, tmp_path / "sm", via="backend", sample_inputs=x)
    assert saved.route == "jax2tf" and saved.relative_diff <= 1e-6
    actual = _run_saved_model(tmp_path / "sm", x)
    np.testing.assert_allclose(actual, student.predict(x, verbose=0), atol=1e-5)
    int8 = kd.export_student(
        student,
        tmp_path / "s.tflite",
        format="tflite",
        quantization="int8",
        representative_data=x,
        via="backend",
    )
    assert int8.route == "jax2tf" and int8.relative_diff <= 0.05
    assert int8.max_abs_diff == pytest.approx(
        np.max(
            np.abs(
                _run_tflite(tmp_path / "s.tflite", x) - student.predict(x, verbose=0)
            )
        ),
        rel=1e-3,
    )


@pytest.mark.skipif(BACKEND != "torch", reason="Keras' torch export")
def test_torch_backend_route_needs_torch_xla(student, tmp_path):
    if importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed")
    with pytest.raises(ImportError, match="torch_xla.*via='tensorflow'"):
        kd.export_student(student, tmp_path / "sm", via="backend")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("module", [export_module, export_worker, tf_files])
def test_export_modules_do_not_import_tensorflow_at_import_time(module):
    """TensorFlow is imported when an export runs (under JAX and PyTorch, in
    the subprocess), never when kerasdistill is imported."""
    with open(module.__file__, encoding="utf-8") as file:
        body = ast.parse(file.read()).body
    names = [
        alias.name
        for node in body
        if isinstance(node, ast.Import)
        for alias in node.names
    ] + [node.module for node in body if isinstance(node, ast.ImportFrom)]
    assert not [
        n
        for n in names
        if n
        and n.split(".")[0] in ("tensorflow", "keras")
        and n.startswith(("tensorflow", "keras.src"))
    ]
