"""DeepSupervision (BYOT): the loss against numpy, the final head as a
stop-gradient teacher, one forward pass per step, `training` reaching the
distillation loss, heads left out of the model and its export, saving, bad
input. Every test but the SavedModel export runs on TensorFlow, JAX and
PyTorch."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import CallCounter
from conftest import as_numpy
from conftest import gradients
from conftest import make_classifier

import kerasdistill as kd

# Eager steps are the fast path for tiny models where nothing is traced
# (TensorFlow) or everything runs eagerly anyway (PyTorch); JAX is faster
# compiled.
EAGER = BACKEND != "jax"

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_cross_entropy(y, logits):
    return -np.log(np_softmax(logits)[np.arange(len(y)), y])


def np_kl(teacher, student, temperature):
    p_t, p_s = np_softmax(teacher / temperature), np_softmax(student / temperature)
    return (p_t * (np.log(p_t) - np.log(p_s))).sum(-1) * temperature**2


def deep_classifier(counter=None):
    inputs = keras.Input((6,))
    first = inputs if counter is None else counter(inputs)
    h1 = keras.layers.Dense(8, activation="relu", name="h1")(first)
    h2 = keras.layers.Dense(8, activation="relu", name="h2")(h1)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h2), name="deep")


def supervised(model=None, **kwargs):
    kwargs.setdefault("distillation_loss", kd.LogitsDistillation(2.0))
    return kd.DeepSupervision(model or deep_classifier(), ["h1", "h2"], **kwargs)


def test_loss_matches_byot_formula(classification_data):
    x, y = classification_data
    deep = supervised(student_loss_weight=0.3)
    deep.compile("adam", SPARSE_CE, metrics=["accuracy"], run_eagerly=EAGER)
    logs = deep.evaluate(x, y, verbose=0, return_dict=True)
    model = deep.model
    final = as_numpy(model(x))
    heads = [
        as_numpy(
            deep.heads[name](keras.Model(model.input, model.get_layer(name).output)(x))
        )
        for name in ("h1", "h2")
    ]
    final_loss = np_cross_entropy(y, final).mean()
    head_loss = sum(np_cross_entropy(y, h).mean() for h in heads)
    distillation = sum(np_kl(final, h, 2.0).mean() for h in heads)
    assert logs["student_loss"] == pytest.approx(final_loss, rel=1e-5)
    assert logs["head_loss"] == pytest.approx(head_loss, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(distillation, rel=1e-5)
    expected = final_loss + 0.3 * head_loss + 0.7 * distillation
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["accuracy"] == pytest.approx(np.mean(final.argmax(-1) == y))


def test_final_head_is_a_stop_gradient_teacher_and_heads_train_shallow_layers(
    classification_data,
):
    x, y = classification_data
    deep = supervised()
    deep.compile("adam", SPARSE_CE)
    model = deep.model
    watched = [model.get_layer("logits").kernel, model.get_layer("h1").kernel]
    total_gradients = gradients(lambda: deep.compute_loss(x, y), watched)
    final_gradients = gradients(lambda: SPARSE_CE(y, model(x, training=True)), watched)
    # The heads' distillation term does not reach the final layer...
    np.testing.assert_allclose(
        total_gradients[0], final_gradients[0], rtol=1e-5, atol=1e-7
    )
    # ...but it and the heads' label loss reach the shallow layers.
    assert np.abs(np.asarray(total_gradients[1] - final_gradients[1])).max() > 1e-4


def test_heads_are_not_part_of_the_model(tmp_path, classification_data):
    x, y = classification_data
    model = deep_classifier()
    params, layers = model.count_params(), list(model.layers)
    deep = supervised(model)
    deep.compile("adam", SPARSE_CE, metrics=["accuracy"], run_eagerly=EAGER)
    head_weights = [as_numpy(w).copy() for w in deep.heads["h1"].weights]
    history = deep.fit(x, y, epochs=3, batch_size=32, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert any(
        not np.allclose(a, as_numpy(w))
        for a, w in zip(head_weights, deep.heads["h1"].weights)
    )
    assert deep.model is model and model.count_params() == params
    assert model.layers == layers
    expected = as_numpy(model(x))
    np.testing.assert_allclose(as_numpy(deep(x)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        deep.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6
    )
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.count_params() == params
    np.testing.assert_allclose(as_numpy(reloaded(x)), expected, rtol=1e-6)


@pytest.mark.tensorflow_only(
    reason="SavedModel export read back with tf.saved_model.load"
)
def test_heads_are_not_part_of_the_export(tmp_path, classification_data):
    import tensorflow as tf

    x, y = classification_data
    model = deep_classifier()
    params = model.count_params()
    deep = supervised(model)
    deep.compile("adam", SPARSE_CE)
    deep.fit(x, y, epochs=1, batch_size=32, verbose=0)
    expected = as_numpy(model(x))
    model.export(str(tmp_path / "saved_model"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved_model"))
    np.testing.assert_allclose(served.serve(x).numpy(), expected, rtol=1e-5)
    assert sum(int(np.prod(v.shape)) for v in served.variables) == params


def test_one_forward_pass_per_step_computes_the_output_and_every_head(
    classification_data,
):
    x, y = classification_data
    counter = CallCounter(name="counter")
    deep = supervised(deep_classifier(counter))
    deep.compile("adam", SPARSE_CE)
    deep.fit(x, y, epochs=1, batch_size=16, verbose=0)  # 4 steps
    assert float(as_numpy(counter.calls)) == 4
    # Evaluation runs the model for `y_pred`, then with its heads for the
    # loss: predict() and evaluate() call it alike, so only training can
    # hand the heads' outputs to the loss.
    deep.evaluate(x, y, batch_size=32, verbose=0)  # 2 steps
    assert float(as_numpy(counter.calls)) == 8


def test_training_reaches_the_distillation_loss(classification_data):
    # DifficultyWeighted updates its running mean in training steps only.
    x, y = classification_data
    loss = kd.DifficultyWeighted(kd.LogitsDistillation(2.0))
    deep = supervised(distillation_loss=loss)
    deep.compile("adam", SPARSE_CE)
    deep.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert float(as_numpy(loss.updates)) == 4 * 2  # 4 steps, 2 heads
    running_mean = float(as_numpy(loss.running_mean))
    assert running_mean > 0
    deep.evaluate(x, y, verbose=0)
    assert float(as_numpy(loss.updates)) == 8
    assert float(as_numpy(loss.running_mean)) == running_mean


def test_regression_on_a_feature_map_with_pooled_default_heads(regression_data):
    x, y = regression_data
    inputs = keras.Input((6,))
    sequence = keras.layers.Reshape((6, 1))(inputs)
    conv = keras.layers.Conv1D(4, 3, activation="relu", name="conv")(sequence)
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(
        keras.layers.Flatten()(conv)
    )
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
    deep = kd.DeepSupervision(
        model, ["conv", "hidden"], kd.RegressionDistillation("mse")
    )
    assert isinstance(deep.heads["conv"].layers[0], keras.layers.GlobalAveragePooling1D)
    deep.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    # 8 epochs: with some initializations (JAX's for seed 0) the final
    # output's mae first rises for a few epochs while the heads' losses
    # dominate the total, which falls from the first epoch.
    history = deep.fit(x, y, epochs=8, batch_size=16, verbose=0).history
    assert (
        history["mae"][-1] < history["mae"][0] and history["distillation_loss"][-1] > 0
    )


def test_config_and_keras_file_round_trip(tmp_path, classification_data):
    x, y = classification_data
    heads = {
        "h1": keras.Sequential(
            [keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)],
            name="custom_h1",
        ),
        "h2": keras.layers.Dense(3, name="custom_h2"),
    }
    deep = supervised(heads=heads, student_loss_weight=0.4)
    deep.compile("adam", SPARSE_CE, metrics=["accuracy"], run_eagerly=EAGER)
    deep.fit(x, y, epochs=1, verbose=0)
    deep.student_loss_weight = 0.6
    config = deep.get_config()
    assert kd.DeepSupervision.from_config(config).get_config() == config
    deep.save(tmp_path / "deep.keras")
    loaded = keras.saving.load_model(tmp_path / "deep.keras")
    assert isinstance(loaded, kd.DeepSupervision) and loaded.head_layers == ["h1", "h2"]
    assert float(loaded.student_loss_weight.numpy()) == pytest.approx(0.6)
    for a, b in zip(loaded.get_weights(), deep.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(
        deep.evaluate(x, y, verbose=0)
    )


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def two_outputs():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="h1")(inputs)
    return keras.Model(
        inputs, [keras.layers.Dense(3)(hidden), keras.layers.Dense(1)(hidden)]
    )


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: kd.DeepSupervision(
                deep_classifier(), ["h3"], kd.LogitsDistillation()
            ),
            ValueError,
            "Expected a layer named 'h3'.*Did you mean",
        ),
        (
            lambda: kd.DeepSupervision(deep_classifier(), [], kd.LogitsDistillation()),
            ValueError,
            "non-empty list of layer names",
        ),
        (
            lambda: supervised(heads={"h1": keras.layers.Dense(3)}),
            ValueError,
            "map each layer of head_layers",
        ),
        (
            lambda: supervised(heads={"h1": keras.layers.Dense(3), "h2": "dense"}),
            TypeError,
            "keras layer",
        ),
        (
            lambda: supervised(
                heads={"h1": keras.layers.Dense(4), "h2": keras.layers.Dense(3)}
            ),
            ValueError,
            "head of 'h1' to output the model's shape",
        ),
        (
            lambda: kd.DeepSupervision(
                Subclassed(), ["dense"], kd.LogitsDistillation()
            ),
            ValueError,
            "functional or Sequential",
        ),
        (
            lambda: kd.DeepSupervision(two_outputs(), ["h1"], kd.LogitsDistillation()),
            ValueError,
            "one output",
        ),
        (
            lambda: supervised(
                distillation_loss=kd.FeatureDistillation("mse", "h1", "h1")
            ),
            ValueError,
            "cannot tap a layer",
        ),
        (lambda: supervised(student_loss_weight=-1.0), ValueError, r"in \[0, 1\]"),
        (
            lambda: kd.DeepSupervision(make_classifier(4), ["model_hidden"], "kl"),
            TypeError,
            "DistillationLoss",
        ),
    ],
)
def test_bad_input_raises(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_labels_and_a_loss_are_required(classification_data):
    x, y = classification_data
    deep = supervised()
    with pytest.raises(ValueError, match="Expected compile.*without `loss`"):
        deep.compile("adam", run_eagerly=EAGER)
    deep.compile("adam", SPARSE_CE, run_eagerly=EAGER)
    with pytest.raises(
        ValueError, match="Expected batches with labels.*learns from labels"
    ):
        deep.fit(x, verbose=0)


def test_a_softmax_model_needs_from_logits_false(classification_data):
    x, y = classification_data
    model = make_classifier(8, activation="softmax")
    with pytest.raises(ValueError, match="from_logits=False"):
        kd.DeepSupervision(model, ["model_hidden"], kd.LogitsDistillation())
    deep = kd.DeepSupervision(
        model, ["model_hidden"], kd.LogitsDistillation(from_logits=False)
    )
    head = deep.heads["model_hidden"].layers[-1]
    assert head.activation is keras.activations.softmax
    deep.compile("adam", "sparse_categorical_crossentropy", run_eagerly=EAGER)
    assert np.isfinite(deep.evaluate(x, y, verbose=0, return_dict=True)["loss"])
