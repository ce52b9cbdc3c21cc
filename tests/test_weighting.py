"""DifficultyWeighted: the weights against numpy, the running mean
(training only), gradients, the Distiller, saving. Every test runs on
TensorFlow, JAX and PyTorch (conftest seeds each test)."""

import keras
import numpy as np
import pytest
from conftest import value_and_gradients

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def np_hinton(teacher, student, temperature):
    """T^2 * KL(softmax(t/T) || softmax(s/T)) per sample (Hinton 2015)."""

    def log_softmax(z):
        z = z / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_t, log_s = log_softmax(teacher), log_softmax(student)
    return temperature**2 * (np.exp(log_t) * (log_t - log_s)).sum(-1)


def np_weights(losses, mean, beta, scale):
    """The heuristic: beta * (1 + scale * tanh(loss - running mean))."""
    return beta * (1.0 + scale * np.tanh(losses - mean))


def batches(n=3, size=8):
    rng = np.random.default_rng(3)
    return [
        (rng.normal(size=(size, 5)) * 3, rng.normal(size=(size, 5)) * 3)
        for _ in range(n)
    ]


def test_matches_numpy_with_bias_corrected_running_mean():
    beta, scale, momentum, temperature = 0.7, 0.3, 0.8, 2.0
    loss = kd.DifficultyWeighted(
        kd.LogitsDistillation(temperature),
        beta=beta,
        scale=scale,
        momentum=momentum,
    )
    ema, updates = 0.0, 0
    for teacher, student in batches():
        per_sample = np_hinton(teacher, student, temperature)
        ema = momentum * ema + (1 - momentum) * per_sample.mean()
        updates += 1
        mean = ema / (1 - momentum**updates)
        expected = np.mean(np_weights(per_sample, mean, beta, scale) * per_sample)
        got = loss.compute_loss(
            teacher.astype("float32"), student.astype("float32"), training=True
        )
        np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert float(loss.updates.numpy()) == 3
    np.testing.assert_allclose(float(loss.running_mean.numpy()), ema, rtol=1e-5)

    # Evaluation uses the running mean and leaves it alone; sample weights
    # multiply the difficulty weights.
    teacher, student = batches(1, 6)[0]
    sample_weight = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 1.0], "float32")
    per_sample = np_hinton(teacher, student, temperature)
    expected = np.mean(
        sample_weight * np_weights(per_sample, mean, beta, scale) * per_sample
    )
    got = loss.compute_loss(
        teacher.astype("float32"),
        student.astype("float32"),
        sample_weight=sample_weight,
        training=False,
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert float(loss.updates.numpy()) == 3


def test_first_evaluation_without_training_uses_the_batch_mean():
    loss = kd.DifficultyWeighted(kd.RegressionDistillation("mse"), scale=-0.5)
    teacher, student = batches(1, 6)[0]
    per_sample = ((teacher - student) ** 2).mean(-1)
    weights = np_weights(per_sample, per_sample.mean(), 1.0, -0.5)
    expected = np.mean(weights * per_sample)
    got = loss.compute_loss(teacher.astype("float32"), student.astype("float32"))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_weights_are_constants_for_the_gradient():
    loss = kd.DifficultyWeighted(kd.LogitsDistillation(2.0), scale=0.3, momentum=0.0)
    teacher, student = (b.astype("float32") for b in batches(1)[0])
    value, (gradient,) = value_and_gradients(
        lambda s: loss.compute_loss(teacher, s, training=True), student
    )
    per_sample = np_hinton(teacher, student, 2.0)
    weights = np_weights(per_sample, per_sample.mean(), 1.0, 0.3).astype("float32")
    reference, (reference_gradient,) = value_and_gradients(
        lambda s: keras.ops.mean(
            keras.ops.multiply(weights, kd.losses.logits_kl_divergence(teacher, s, 2.0))
        ),
        student,
    )
    np.testing.assert_allclose(float(value), float(reference), rtol=1e-5)
    np.testing.assert_allclose(gradient, reference_gradient, rtol=1e-4, atol=1e-7)


def mlp(width, name):
    inputs = keras.Input((6,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(inputs)
    outputs = keras.layers.Dense(3, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def test_in_distiller_updates_in_training_only_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = np.argmax(x[:, :3], axis=1)
    loss = kd.DifficultyWeighted(kd.LogitsDistillation(4.0), beta=1.5)
    distiller = kd.Distiller(mlp(16, "teacher"), mlp(4, "student"), loss)
    distiller.compile(optimizer="adam", loss=SPARSE_CE)
    history = distiller.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[
            kd.callbacks.TemperatureScheduler(kd.schedules.Piecewise([1], [4.0, 2.0]))
        ],
    ).history
    assert history["temperature"] == pytest.approx([4.0, 2.0])
    assert float(loss.temperature.numpy()) == 2.0  # the wrapped loss's
    assert float(loss.updates.numpy()) == 8
    running_mean = float(loss.running_mean.numpy())
    distiller.evaluate(x, y, verbose=0)
    assert float(loss.running_mean.numpy()) == running_mean
    assert float(loss.updates.numpy()) == 8

    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.distillation_losses[0]
    assert isinstance(restored, kd.DifficultyWeighted)
    assert isinstance(restored.loss, kd.LogitsDistillation)
    assert restored.get_config() == loss.get_config()
    assert float(restored.running_mean.numpy()) == running_mean
    assert float(restored.temperature.numpy()) == 2.0
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0),
        distiller.evaluate(x, y, verbose=0),
        rtol=1e-6,
    )


def test_config_round_trip_and_layer_names():
    hint = kd.FeatureDistillation(
        teacher_layer_name="teacher_hidden", student_layer_name="student_hidden"
    )
    loss = kd.DifficultyWeighted(hint, beta=2.0, scale=-0.2, momentum=0.5)
    assert (loss.teacher_layer_name, loss.student_layer_name) == (
        "teacher_hidden",
        "student_hidden",
    )
    assert loss.temperature is None
    rebuilt = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert rebuilt.get_config() == loss.get_config()
    assert rebuilt.student_layer_name == "student_hidden"


def test_accepts_a_keras_distillation_loss():
    loss = kd.DifficultyWeighted(keras.distillation.LogitsDistillation(temperature=3.0))
    assert isinstance(loss.loss, kd.LogitsDistillation)
    assert float(loss.temperature.numpy()) == 3.0


class BatchLevelLoss(keras.distillation.DistillationLoss):
    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return keras.ops.mean(keras.ops.square(teacher_outputs - student_outputs))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"loss": BatchLevelLoss()}, TypeError, "one value per batch"),
        ({"scale": 1.5}, ValueError, r"scale in \[-1, 1\]"),
        ({"momentum": 1.0}, ValueError, r"momentum in \[0, 1\)"),
        ({"beta": -1.0}, ValueError, "beta >= 0"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    kwargs = {"loss": kd.LogitsDistillation(), **kwargs}
    with pytest.raises(error, match=message):
        kd.DifficultyWeighted(**kwargs)
