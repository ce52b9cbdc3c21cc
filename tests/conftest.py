"""Shared fixtures: tiny data and tiny functional models, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_float32_policy():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def make_classifier(width, classes=3, features=6, name="model", activation=None):
    """A two-layer MLP: `{name}_hidden` (width) then `{name}_logits`."""
    inputs = keras.Input((features,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(
        inputs
    )
    outputs = keras.layers.Dense(
        classes, activation=activation, name=f"{name}_logits"
    )(hidden)
    return keras.Model(inputs, outputs, name=name)


def make_regressor(width, outputs=1, features=6, name="model"):
    inputs = keras.Input((features,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(
        inputs
    )
    return keras.Model(
        inputs, keras.layers.Dense(outputs, name=f"{name}_out")(hidden), name=name
    )


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
