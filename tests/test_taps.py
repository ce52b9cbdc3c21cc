"""Taps: functional, Sequential, nested and subclassed models; one forward
pass; shared weights; clear errors."""

import keras
import numpy as np
import pytest
from conftest import as_numpy
from test_distiller import CallCounter

from kerasdistill import taps

X = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")


def nested_model(counter=None, name="net"):
    """input -> backbone(hidden -> block_out) -> head; optional counter
    inside the backbone."""
    inputs = keras.Input((6,))
    h = counter(inputs) if counter is not None else inputs
    h = keras.layers.Dense(8, activation="relu", name="hidden")(h)
    backbone = keras.Model(
        inputs, keras.layers.Dense(5, name="block_out")(h), name="backbone"
    )
    outer_inputs = keras.Input((6,))
    features = backbone(outer_inputs)
    features = keras.layers.Activation("relu", name="after")(features)
    return keras.Model(
        outer_inputs, keras.layers.Dense(3, name="logits")(features), name=name
    )


def test_functional_taps_share_the_users_weights():
    model = nested_model()
    tapped = taps.TappedNetwork(model, ["after"], "teacher")
    outputs, features = tapped(X, training=False)
    np.testing.assert_allclose(as_numpy(outputs), as_numpy(model(X)), rtol=1e-6)
    layer = model.get_layer("logits")
    layer.kernel.assign(layer.kernel * 0 + 1.0)  # change the user's weights
    outputs, _ = tapped(X, training=False)
    np.testing.assert_allclose(as_numpy(outputs), as_numpy(model(X)), rtol=1e-6)
    tap_variables = {id(v) for v in tapped.tap_model.weights}
    assert tap_variables == {id(v) for v in model.weights}
    expected = keras.ops.relu(model.get_layer("backbone")(X))
    np.testing.assert_allclose(
        as_numpy(features["after"]), as_numpy(expected), rtol=1e-6
    )


def test_sequential_taps():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, name="d1"),
            keras.layers.Dense(2, name="d2"),
        ]
    )
    outputs, features = taps.TappedNetwork(model, ["d1"], "student")(X, training=False)
    np.testing.assert_allclose(as_numpy(outputs), as_numpy(model(X)), rtol=1e-6)
    np.testing.assert_allclose(
        as_numpy(features["d1"]), as_numpy(model.get_layer("d1")(X)), rtol=1e-6
    )


@pytest.mark.parametrize("name", ["backbone/hidden", "hidden"])
def test_nested_layer_by_path_or_plain_name_in_one_forward_pass(name):
    counter = CallCounter(name="counter")
    model = nested_model(counter)
    tapped = taps.TappedNetwork(model, [name, "after", "backbone/block_out"], "teacher")
    counter.training_flags.clear()  # forget the symbolic builds
    outputs, features = tapped(X, training=True)
    assert float(counter.calls.numpy()) == 1  # one pass for the output and every tap
    assert counter.training_flags == {True}
    backbone = model.get_layer("backbone")
    np.testing.assert_allclose(as_numpy(outputs), as_numpy(model(X)), rtol=1e-6)
    np.testing.assert_allclose(
        as_numpy(features[name]),
        as_numpy(keras.ops.relu(backbone.get_layer("hidden")(X))),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        as_numpy(features["backbone/block_out"]), as_numpy(backbone(X)), rtol=1e-6
    )
    assert taps.feature_spec(model, name, "teacher").shape == (None, 8)


def test_nested_taps_leave_the_model_tappable_again():
    model = nested_model()
    taps.TappedNetwork(
        model, ["backbone/hidden"], "teacher"
    )  # re-traces the outer graph
    outputs, features = taps.TappedNetwork(model, ["after", "logits"], "teacher")(
        X, False
    )
    np.testing.assert_allclose(
        as_numpy(features["logits"]), as_numpy(outputs), rtol=1e-6
    )
    assert len(model.get_config()["layers"]) == len(model.layers)


def test_nested_sequential_backbone():
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="inner")], name="seq"
    )
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(backbone(inputs)))
    outputs, features = taps.TappedNetwork(model, ["seq/inner"], "student")(X, False)
    np.testing.assert_allclose(
        as_numpy(features["seq/inner"]), as_numpy(backbone(X)), rtol=1e-6
    )
    np.testing.assert_allclose(as_numpy(outputs), as_numpy(model(X)), rtol=1e-6)


def test_unknown_name_lists_the_closest_names():
    model = nested_model()
    with pytest.raises(
        ValueError, match=r"Did you mean \['backbone/hidden'\]"
    ) as error:
        taps.TappedNetwork(model, ["hiden"], "teacher")
    assert "Available layers" in str(error.value) and "backbone/block_out" in str(
        error.value
    )
    with pytest.raises(ValueError, match="Did you mean"):
        taps.find_layer(model, "backbone/hiddn", "teacher")
    with pytest.raises(ValueError, match="holding 'x'"):
        taps.find_layer(model, "after/x", "teacher")


def test_a_name_in_two_nested_models_must_be_given_by_path():
    inputs = keras.Input((6,))
    first = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="block")], name="a"
    )
    second = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, name="block")], name="b"
    )
    model = keras.Model(inputs, second(first(inputs)))
    with pytest.raises(ValueError, match=r"\['a/block', 'b/block'\]"):
        taps.find_layer(model, "block", "student")
    assert taps.find_layer(model, "b/block", "student") is second.get_layer("block")


def test_shared_layer_and_shared_nested_model_are_refused():
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(6, name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    with pytest.raises(ValueError, match="is shared"):
        taps.TappedNetwork(model, ["shared"], "teacher")
    backbone = nested_model().get_layer("backbone")
    twice = keras.Model(
        inputs, keras.layers.Add()([backbone(inputs), backbone(inputs)])
    )
    with pytest.raises(ValueError, match="'backbone' is shared"):
        taps.TappedNetwork(twice, ["backbone/hidden"], "teacher")


class FeatureReturning(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(5, name="hidden")
        self.head = keras.layers.Dense(3)

    def call(self, x, training=None, return_features=False):
        h = self.hidden(x)
        outputs = self.head(h)
        return (outputs, {"hidden": h}) if return_features else outputs


def test_subclassed_model_with_the_feature_returning_convention():
    model = FeatureReturning()
    assert taps.feature_spec(model, "hidden", "student") is None  # never built
    model(X)
    assert taps.feature_spec(model, "hidden", "student").shape == (None, 5)
    outputs, features = taps.TappedNetwork(model, ["hidden"], "student")(X, False)
    np.testing.assert_allclose(as_numpy(outputs), as_numpy(model(X)), rtol=1e-6)
    np.testing.assert_allclose(
        as_numpy(features["hidden"]), as_numpy(model.hidden(X)), rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"Did you mean \['hidden'\]"):
        taps.feature_spec(model, "hiden", "student")


def test_subclassed_model_without_the_convention_is_refused_with_the_fix():
    class Plain(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="return_features") as error:
        taps.TappedNetwork(Plain(), ["dense"], "teacher")
    assert "functional API" in str(error.value)
