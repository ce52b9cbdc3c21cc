"""Logit standardization (Sun et al. 2024) and CTKD (Li et al. 2023) against
numpy re-computations of their papers' formulas; CTKD's gradient reversal
and its curriculum."""

import os

import keras
import numpy as np
import pytest
from conftest import as_numpy
from conftest import gradients
from conftest import make_classifier
from conftest import value_and_gradients

import kerasdistill as kd

RNG = np.random.default_rng(5)
TEACHER = (RNG.normal(size=(6, 5)) * 4 + 2).astype("float32")
STUDENT = (RNG.normal(size=(6, 5)) * 1.5).astype("float32")
LABELS = np.array([0, 1, 4, 2, 2, 3])


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_zscore(z):
    """Sun et al. 2024, eq. 9: (z - mean(z)) / sigma(z), sigma the
    population standard deviation over the classes."""
    return (z - z.mean(-1, keepdims=True)) / z.std(-1, keepdims=True)


def np_kd(t, s, temperature):
    p_t, p_s = softmax(t / temperature), softmax(s / temperature)
    return temperature**2 * np.sum(p_t * np.log(p_t / p_s), -1)


def test_standardized_logits_have_zero_mean_and_unit_std():
    z = as_numpy(kd.losses.standardize_logits(TEACHER))
    np.testing.assert_allclose(z, np_zscore(TEACHER), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(-1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_logits_distillation_with_standardization_matches_sun_et_al(temperature):
    expected = np_kd(np_zscore(TEACHER), np_zscore(STUDENT), temperature)
    loss = kd.LogitsDistillation(temperature, logit_standardization=True)
    np.testing.assert_allclose(
        float(as_numpy(loss.compute_loss(TEACHER, STUDENT))), expected.mean(), rtol=1e-4
    )
    # Invariant to a shift and a scale of either network's logits.
    shifted = loss.compute_loss(TEACHER * 3.0 + 7.0, STUDENT * 0.5 - 1.0)
    assert float(as_numpy(shifted)) == pytest.approx(expected.mean(), rel=1e-4)
    plain = kd.LogitsDistillation(temperature)
    assert float(as_numpy(plain.compute_loss(TEACHER, STUDENT))) != pytest.approx(
        expected.mean(), rel=1e-2
    )


def test_dkd_with_standardization_is_dkd_of_the_z_scores():
    expected = kd.losses.decoupled_kd(
        np_zscore(TEACHER), np_zscore(STUDENT), LABELS, 1.0, 8.0, 2.0
    )
    loss = kd.DKD(temperature=2.0, logit_standardization=True)
    np.testing.assert_allclose(
        float(as_numpy(loss.compute_loss(TEACHER, STUDENT, y_true=LABELS))),
        as_numpy(expected).mean(),
        rtol=1e-4,
    )


def test_constant_logits_have_finite_gradients():
    constant = np.zeros((2, 5), dtype="float32")
    loss = kd.LogitsDistillation(2.0, logit_standardization=True)
    _, (_, grad) = value_and_gradients(
        lambda t, s: loss.compute_loss(t, s), TEACHER[:2], constant
    )
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize(
    "loss",
    [
        kd.LogitsDistillation(2.0, logit_standardization=True),
        kd.DKD(temperature=2.0, logit_standardization=True),
    ],
)
def test_standardization_round_trips(loss):
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert restored.logit_standardization is True
    assert restored.get_config() == loss.get_config()


def test_standardization_option_must_be_a_bool():
    with pytest.raises(TypeError, match="logit_standardization=1"):
        kd.LogitsDistillation(logit_standardization=1)


def test_gradient_reversal_is_identity_forward_and_reverses_backward():
    x = np.array([0.5, -2.0, 3.0], dtype="float32")
    value, (grad,) = value_and_gradients(
        lambda v: keras.ops.sum(kd.losses.gradient_reversal(v, 0.7) * v), x
    )
    assert float(value) == pytest.approx(float(np.sum(x * x)), rel=1e-6)
    # d/dv [g(v) * v] = g'(v) * v + g(v) with g' = -0.7 and g(v) = v.
    np.testing.assert_allclose(grad, -0.7 * x + x, rtol=1e-6)


def test_ctkd_matches_hinton_kd_at_its_learned_temperature():
    loss = kd.CTKD(initial_temperature=3.0, min_temperature=1.0, max_temperature=21.0)
    assert float(as_numpy(loss.temperature)) == pytest.approx(3.0, rel=1e-6)
    expected = np_kd(TEACHER, STUDENT, 3.0).mean()
    assert float(as_numpy(loss.compute_loss(TEACHER, STUDENT))) == pytest.approx(
        expected, rel=1e-4
    )


def test_ctkd_temperature_gradient_is_the_reversed_loss_gradient():
    """The temperature ascends the loss (Li et al. 2023, eq. 8): its
    gradient is -lambda times that of the plain loss."""
    loss = kd.CTKD(initial_temperature=3.0, reversal_strength=0.5)
    (reversed_,) = gradients(lambda: loss.compute_loss(TEACHER, STUDENT), [loss._theta])
    theta = float(as_numpy(loss._theta))

    def plain(value):
        temperature = 1.0 + 20.0 * keras.ops.sigmoid(value)
        teacher, student = (keras.ops.convert_to_tensor(z) for z in (TEACHER, STUDENT))
        return keras.ops.mean(
            kd.losses.logits_kl_divergence(teacher, student, temperature)
        )

    _, (direct,) = value_and_gradients(plain, np.float32(theta))
    assert abs(float(direct)) > 1e-4
    assert float(reversed_) == pytest.approx(-0.5 * float(direct), rel=1e-4)


def test_ctkd_temperature_moves_and_is_logged_with_the_curriculum(classification_data):
    x, y = classification_data
    loss = kd.CTKD(initial_temperature=4.0)
    distiller = kd.Distiller(
        make_classifier(16, name="teacher"), make_classifier(4, name="student"), loss
    )
    distiller.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = distiller.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[kd.recipes.curriculum_temperature(ramp_epochs=2)],
    ).history
    assert history["reversal_strength"] == pytest.approx([0.0, 0.5, 1.0])
    temperatures = history["temperature"]
    assert temperatures[0] == pytest.approx(4.0, abs=1e-4)  # lambda 0: fixed
    assert abs(temperatures[-1] - 4.0) > 1e-3
    # The log is the temperature of the epoch's last step, before its update.
    assert float(as_numpy(loss.temperature)) != pytest.approx(4.0, abs=1e-3)


def test_ctkd_round_trips_in_a_saved_distiller(tmp_path, classification_data):
    x, y = classification_data
    loss = kd.CTKD(initial_temperature=5.0, reversal_strength=0.25)
    distiller = kd.Distiller(
        make_classifier(8, name="teacher"), make_classifier(4, name="student"), loss
    )
    distiller.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = os.path.join(tmp_path, "ctkd.keras")
    distiller.save(path)
    restored = keras.models.load_model(path).distillation_losses[0]
    assert isinstance(restored, kd.CTKD)
    assert float(as_numpy(restored.temperature)) == pytest.approx(
        float(as_numpy(loss.temperature)), rel=1e-6
    )
    assert float(as_numpy(restored.reversal_strength)) == 0.25
    config = keras.saving.serialize_keras_object(kd.recipes.curriculum_temperature(4))
    callback = keras.saving.deserialize_keras_object(config)
    assert callback.schedule(4) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: kd.CTKD(initial_temperature=0.5), "min_temperature < initial"),
        (lambda: kd.CTKD(reversal_strength=-1), "reversal_strength >= 0"),
        (lambda: kd.recipes.curriculum_temperature(0), "ramp_epochs"),
    ],
)
def test_ctkd_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_reversal_scheduler_needs_a_ctkd_loss(classification_data):
    x, y = classification_data
    distiller = kd.Distiller(
        make_classifier(8, name="teacher"),
        make_classifier(4, name="student"),
        kd.LogitsDistillation(),
    )
    distiller.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    with pytest.raises(ValueError, match="reversal_strength"):
        distiller.fit(
            x, y, epochs=1, verbose=0, callbacks=[kd.recipes.curriculum_temperature(2)]
        )
