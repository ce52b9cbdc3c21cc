"""Shared fixtures: tiny data and tiny functional models, fixed seeds.

Backends. The suite runs under the backend that `KERAS_BACKEND` names
(TensorFlow when unset): CI runs the full suite on TensorFlow and the core
suite (the file list in `.ci/run`) on JAX and PyTorch. A test that needs
TensorFlow by nature (`tf.distribute`, TFDS, tf.data caches, SavedModel /
TFLite internals) is marked `@pytest.mark.tensorflow_only`, or its whole
module is named in `TENSORFLOW_ONLY_MODULES`; on another backend it is
skipped with the reason. `BACKEND` holds the backend's name, and the report
header says which keras and backend a run used.
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

# Test modules that are TensorFlow-only as a whole (file name: why): on another
# backend every test in them is skipped, as if each were marked
# `tensorflow_only`. (TFDS and tf.data pipelines feed `fit()` on every
# backend, so their modules mark single tests instead.)
TENSORFLOW_ONLY_MODULES = {
    "test_distribute.py": "tf.distribute strategies",
}


def _versions():
    versions = [f"keras {keras.__version__} ({os.path.dirname(keras.__file__)})"]
    if BACKEND in ("tensorflow", "jax", "torch"):
        versions.append(f"{BACKEND} {__import__(BACKEND).__version__}")
    return f"kerasdistill tests: KERAS_BACKEND={BACKEND}; " + ", ".join(versions)


def pytest_report_header(config):
    return _versions()


def pytest_sessionstart(session):
    # `-q` hides the report header; CI's logs still say what each run used.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.option.verbose < 0:
        reporter.write_line(_versions())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BACKEND == "numpy" and item.get_closest_marker("requires_trainable_backend"):
            item.add_marker(pytest.mark.skip(reason="the numpy backend cannot train"))
        if BACKEND == "tensorflow":
            continue
        module = os.path.basename(str(item.fspath))
        if module in TENSORFLOW_ONLY_MODULES:
            why = TENSORFLOW_ONLY_MODULES[module]
        elif item.get_closest_marker("tensorflow_only"):
            marker = item.get_closest_marker("tensorflow_only")
            why = marker.kwargs.get("reason") or (
                marker.args[0] if marker.args else "TensorFlow by nature"
            )
        else:
            continue
        item.add_marker(
            pytest.mark.skip(reason=f"tensorflow_only ({why}); KERAS_BACKEND={BACKEND}")
        )


@pytest.fixture(autouse=True)
def _seed_and_float32_policy():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


class CallCounter(keras.layers.Layer):
    """Identity layer counting its executions, in a compiled step too."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="calls"
        )

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


def make_classifier(width, classes=3, features=6, name="model", activation=None):
    """A two-layer MLP: `{name}_hidden` (width) then `{name}_logits`."""
    inputs = keras.Input((features,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(inputs)
    outputs = keras.layers.Dense(classes, activation=activation, name=f"{name}_logits")(
        hidden
    )
    return keras.Model(inputs, outputs, name=name)


def make_regressor(width, outputs=1, features=6, name="model"):
    inputs = keras.Input((features,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(inputs)
    return keras.Model(
        inputs, keras.layers.Dense(outputs, name=f"{name}_out")(hidden), name=name
    )


def make_gemma_lm(width, seed, name, vocabulary):
    """A one-layer keras-hub `GemmaCausalLM` built from a config, no
    preprocessor, with a final logit soft-cap (needs keras-hub)."""
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=vocabulary,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=width,
        intermediate_dim=2 * width,
        head_dim=4,
        final_logit_soft_cap=10.0,
        name=f"{name}_backbone",
    )
    return keras_hub.models.GemmaCausalLM(
        backbone=backbone, preprocessor=None, name=name
    )


def run_on_host_devices(body, devices, timeout):
    """Runs the Python source `body` in a fresh JAX process on `devices`
    host CPU devices (`--xla_force_host_platform_device_count`), with this
    checkout first on the path, and returns what its last `RESULT <json>`
    line holds; fails the test on a timeout or an error."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join([root, *paths]),
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", body],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"The {devices}-device run took over {timeout} s: {error}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (
        f"The {devices}-device run failed (exit {done.returncode}):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    return json.loads(lines[-1][len("RESULT ") :])


def as_numpy(x):
    """A tensor of any backend as a numpy array (a PyTorch tensor that
    requires grad too)."""
    return keras.ops.convert_to_numpy(keras.ops.stop_gradient(x))


def float_logs(logs):
    """`evaluate(..., return_dict=True)` as floats (Keras < 3.15 returns
    tensors, which `pytest.approx` cannot compare)."""
    return {key: float(value) for key, value in logs.items()}


def value_and_gradients(fn, *args):
    """`fn(*args)` and its gradients with respect to each of `args`, as numpy.

    The backend-neutral replacement for a `tf.GradientTape` in a test: `fn`
    takes tensors and returns a scalar tensor; `args` are arrays.

    Returns:
        `(value, [gradient of each arg])`, numpy values.
    """
    args = [np.asarray(a, dtype="float32") for a in args]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
        gradients = tape.gradient(value, tensors)
    elif BACKEND == "jax":
        import jax

        value, gradients = jax.value_and_grad(lambda xs: fn(*xs))(
            [jax.numpy.asarray(a) for a in args]
        )
    elif BACKEND == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        value = fn(*tensors)
        gradients = torch.autograd.grad(value, tensors, allow_unused=True)
    else:
        raise NotImplementedError(f"No gradients on the {BACKEND} backend.")
    return as_numpy(value), [None if g is None else as_numpy(g) for g in gradients]


def gradients(fn, variables):
    """The gradients of `fn()` with respect to `variables` (numpy), on any
    backend: the variables read the differentiated arguments inside a
    `keras.StatelessScope` (whose updates are dropped)."""

    def with_values(*values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn()

    return value_and_gradients(with_values, *[as_numpy(v) for v in variables])[1]


@pytest.fixture
def classification_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (np.argmax(x[:, :3], axis=1)).astype("int32")
    return x, y


@pytest.fixture
def regression_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] - 2.0 * x[:, 1] + 0.1 * rng.normal(size=64)).astype("float32")
    return x, y
