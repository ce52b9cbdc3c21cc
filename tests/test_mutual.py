"""MutualLearning (DML): the loss against numpy, each model's gradient is its
own loss's, one forward pass per model per step, `training` reaching the
distillation loss, per-model metrics, regression, saving, bad input. Every
test runs on TensorFlow, JAX and PyTorch."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import CallCounter
from conftest import as_numpy
from conftest import gradients
from conftest import make_classifier
from conftest import make_regressor

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# Eager steps are the fast path for tiny models on TensorFlow and PyTorch;
# JAX is faster compiled.
EAGER = BACKEND != "jax"


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(teacher, student):
    p_t, p_s = np_softmax(teacher), np_softmax(student)
    return (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)


def three_peers(widths=(4, 8, 16)):
    return [make_classifier(w, name=f"net_{i}") for i, w in enumerate(widths)]


def test_loss_matches_dml_formula_and_metrics_are_per_model(classification_data):
    x, y = classification_data
    models = three_peers()
    mutual = kd.MutualLearning(
        models, kd.LogitsDistillation(1.0), student_loss_weight=0.4
    )
    mutual.compile("adam", SPARSE_CE, metrics=["accuracy"], run_eagerly=EAGER)
    logs = mutual.evaluate(x, y, verbose=0, return_dict=True)
    outputs = [as_numpy(m(x)) for m in models]
    total = 0.0
    for k, output in enumerate(outputs):
        cross_entropy = -np.log(np_softmax(output)[np.arange(len(y)), y]).mean()
        peers = np.mean([np_kl(outputs[j], output).mean() for j in range(3) if j != k])
        expected = 0.4 * cross_entropy + 0.6 * peers
        assert logs[f"net_{k}_loss"] == pytest.approx(expected, rel=1e-5)
        assert logs[f"net_{k}_accuracy"] == pytest.approx(
            np.mean(output.argmax(-1) == y)
        )
        total += expected
    assert logs["loss"] == pytest.approx(total, rel=1e-5)
    predictions = mutual.predict(x, verbose=0)
    assert sorted(predictions) == ["net_0", "net_1", "net_2"]


def test_each_model_follows_the_gradient_of_its_own_loss(classification_data):
    x, y = classification_data
    models = three_peers()
    mutual = kd.MutualLearning(models, kd.LogitsDistillation(1.0))
    mutual.compile("adam", SPARSE_CE)
    loss = kd.LogitsDistillation(1.0)

    def own_loss(k):
        outputs = [m(x, training=True) for m in models]
        peers = [
            loss.compute_loss(keras.ops.stop_gradient(outputs[j]), outputs[k])
            for j in range(3)
            if j != k
        ]
        return 0.5 * SPARSE_CE(y, outputs[k]) + 0.5 * keras.ops.mean(
            keras.ops.stack(peers)
        )

    total_gradients = gradients(
        lambda: mutual.compute_loss(x, y), mutual.trainable_weights
    )
    by_weight = {id(w): g for w, g in zip(mutual.trainable_weights, total_gradients)}
    for k, model in enumerate(models):
        weights = model.trainable_weights
        for weight, expected in zip(
            weights, gradients(lambda k=k: own_loss(k), weights)
        ):
            np.testing.assert_allclose(
                by_weight[id(weight)], expected, rtol=1e-4, atol=1e-7
            )


def counted_peer(width, name):
    inputs = keras.Input((6,))
    counter = CallCounter(name=f"{name}_counter")
    hidden = keras.layers.Dense(width, activation="relu")(counter(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(hidden), name=name), counter


def test_one_forward_pass_per_model_per_step(classification_data):
    x, y = classification_data
    (a, count_a), (b, count_b) = counted_peer(4, "a"), counted_peer(8, "b")
    mutual = kd.MutualLearning([a, b], kd.LogitsDistillation(1.0))
    mutual.compile("adam", SPARSE_CE, metrics=["accuracy"])
    mutual.fit(x, y, epochs=1, batch_size=16, verbose=0)  # 4 steps
    assert [float(as_numpy(c.calls)) for c in (count_a, count_b)] == [4, 4]
    mutual.evaluate(x, y, batch_size=32, verbose=0)  # 2 steps
    assert [float(as_numpy(c.calls)) for c in (count_a, count_b)] == [6, 6]


def test_training_reaches_the_distillation_loss(classification_data):
    # DifficultyWeighted updates its running mean in training steps only.
    x, y = classification_data
    loss = kd.DifficultyWeighted(kd.LogitsDistillation(1.0))
    mutual = kd.MutualLearning(three_peers((4, 8)), loss)
    mutual.compile("adam", SPARSE_CE)
    mutual.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert float(as_numpy(loss.updates)) == 4 * 2  # 4 steps, 2 ordered pairs
    running_mean = float(as_numpy(loss.running_mean))
    assert running_mean > 0
    mutual.evaluate(x, y, verbose=0)
    assert float(as_numpy(loss.updates)) == 8
    assert float(as_numpy(loss.running_mean)) == running_mean


def test_fit_trains_every_model_and_regression_works(regression_data):
    x, y = regression_data
    models = [make_regressor(8, name="a"), make_regressor(16, name="b")]
    before = [m.get_weights() for m in models]
    mutual = kd.MutualLearning(models, kd.RegressionDistillation("huber"))
    mutual.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    history = mutual.fit(x, y, epochs=4, batch_size=16, verbose=0).history
    for name in ("a", "b"):
        assert history[f"{name}_mae"][-1] < history[f"{name}_mae"][0]
    for model, weights in zip(models, before):
        assert any(
            not np.array_equal(a, b) for a, b in zip(weights, model.get_weights())
        )


def test_config_and_keras_file_round_trip(tmp_path, classification_data):
    x, y = classification_data
    mutual = kd.MutualLearning(
        three_peers((4, 4)), kd.LogitsDistillation(2.0), student_loss_weight=0.7
    )
    mutual.compile(
        "adam",
        SPARSE_CE,
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        run_eagerly=EAGER,
    )
    mutual.fit(x, y, epochs=1, verbose=0)
    config = mutual.get_config()
    assert kd.MutualLearning.from_config(config).get_config() == config
    mutual.save(tmp_path / "mutual.keras")
    loaded = keras.saving.load_model(tmp_path / "mutual.keras")
    assert [m.name for m in loaded.models] == ["net_0", "net_1"]
    for a, b in zip(loaded.get_weights(), mutual.get_weights()):
        np.testing.assert_array_equal(a, b)
    logs = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert logs == pytest.approx(mutual.evaluate(x, y, verbose=0, return_dict=True))
    assert "net_1_sparse_categorical_accuracy" in logs


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: kd.MutualLearning([make_classifier(4)], kd.LogitsDistillation()),
            ValueError,
            "two or more",
        ),
        (
            lambda: kd.MutualLearning(make_classifier(4), kd.LogitsDistillation()),
            ValueError,
            "two or more",
        ),
        (
            lambda: kd.MutualLearning(
                [make_classifier(4), "net"], kd.LogitsDistillation()
            ),
            TypeError,
            "keras.Model",
        ),
        (
            lambda: kd.MutualLearning(
                [make_classifier(4), make_classifier(8)], kd.LogitsDistillation()
            ),
            ValueError,
            "distinct names",
        ),
        (
            lambda: kd.MutualLearning(
                [
                    make_classifier(4, name="a"),
                    make_classifier(4, name="b", features=7),
                ],
                kd.LogitsDistillation(),
            ),
            ValueError,
            "same inputs",
        ),
        (
            lambda: kd.MutualLearning(
                [make_classifier(4, name="a"), make_classifier(4, name="b", classes=5)],
                kd.LogitsDistillation(),
            ),
            ValueError,
            "same number of classes",
        ),
        (
            lambda: kd.MutualLearning(
                three_peers(), kd.LogitsDistillation(), student_loss_weight=1.5
            ),
            ValueError,
            r"in \[0, 1\]",
        ),
        (
            lambda: kd.MutualLearning(
                three_peers(), kd.FeatureDistillation("mse", "x", "x")
            ),
            ValueError,
            "cannot tap a layer",
        ),
        (
            lambda: kd.MutualLearning(three_peers(), kd.LogitsDistillation()).compile(
                "adam"
            ),
            ValueError,
            "without `loss`",
        ),
    ],
)
def test_bad_input_raises(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_labels_are_required(classification_data):
    x, _ = classification_data
    mutual = kd.MutualLearning(three_peers(), kd.LogitsDistillation())
    mutual.compile("adam", SPARSE_CE, run_eagerly=EAGER)
    with pytest.raises(
        ValueError, match="Expected batches with labels.*learns from labels"
    ):
        mutual.fit(x, verbose=0)
    with pytest.raises(ValueError, match="Expected `y_pred` to be the dict"):
        mutual.compute_loss(x, np.zeros(len(x)), y_pred=mutual(x)["net_0"])
