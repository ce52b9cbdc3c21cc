"""Each loss against a numpy re-computation of its paper's formula."""

import keras
import numpy as np
import pytest

import kerasdistill as kd
from kerasdistill import losses

RNG = np.random.default_rng(42)
TEACHER = RNG.normal(size=(5, 4)).astype("float32") * 3
STUDENT = RNG.normal(size=(5, 4)).astype("float32") * 3


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_hinton_kl(t, s, temperature):
    p_t, p_s = np_softmax(t / temperature), np_softmax(s / temperature)
    return (p_t * (np.log(p_t) - np.log(p_s))).sum(-1) * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 4.0, 10.0])
def test_kl_matches_hinton_formula(temperature):
    expected = np_hinton_kl(TEACHER, STUDENT, temperature)
    got = losses.logits_kl_divergence(TEACHER, STUDENT, temperature)
    # float32 log-softmax rounding, scaled by T^2 (x100 at T=10): 2e-5 on JAX.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=5e-5)
    loss = kd.LogitsDistillation(temperature=temperature)
    value = loss.compute_loss(TEACHER, STUDENT)
    np.testing.assert_allclose(float(value), expected.mean(), rtol=1e-5)


def test_soft_cross_entropy_matches_formula_and_differs_from_kl_by_entropy():
    t = 2.0
    p_t, p_s = np_softmax(TEACHER / t), np_softmax(STUDENT / t)
    expected = -(p_t * np.log(p_s)).sum(-1) * t**2
    loss = kd.LogitsDistillation(temperature=t, loss="soft_cross_entropy")
    np.testing.assert_allclose(
        float(loss.compute_loss(TEACHER, STUDENT)), expected.mean(), rtol=1e-5
    )
    entropy = -(p_t * np.log(p_t)).sum(-1) * t**2
    np.testing.assert_allclose(
        expected - entropy, np_hinton_kl(TEACHER, STUDENT, t), rtol=1e-4
    )


def test_kl_is_stable_for_extreme_logits():
    t = np.array([[1000.0, -1000.0, 0.0]], dtype="float32")
    s = np.array([[-1000.0, 1000.0, 0.0]], dtype="float32")
    value = float(kd.LogitsDistillation(temperature=1.0).compute_loss(t, s))
    assert np.isfinite(value) and value == pytest.approx(2000.0, rel=1e-4)


def test_from_logits_false_takes_probabilities():
    t = 3.0
    expected = np_hinton_kl(TEACHER, STUDENT, t).mean()
    loss = kd.LogitsDistillation(temperature=t, from_logits=False)
    value = loss.compute_loss(np_softmax(TEACHER), np_softmax(STUDENT))
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)


def test_keras_builtin_logits_distillation_is_not_hinton_kl():
    """The baseline's default applies KL to raw scaled logits (Keras 3.15)."""
    builtin = keras.distillation.LogitsDistillation(temperature=4.0)
    builtin_value = float(builtin.compute_loss(TEACHER, STUDENT))
    expected = np_hinton_kl(TEACHER, STUDENT, 4.0).mean()
    assert not np.isclose(builtin_value, expected, rtol=1e-2)
    ours = kd.LogitsDistillation(temperature=4.0).compute_loss(TEACHER, STUDENT)
    np.testing.assert_allclose(float(ours), expected, rtol=1e-5)


def test_sample_weight_reduces_like_keras_sum_over_batch_size():
    weights = np.array([1.0, 0.0, 2.0, 0.5, 1.0], dtype="float32")
    per_sample = np_hinton_kl(TEACHER, STUDENT, 2.0)
    value = kd.LogitsDistillation(2.0).compute_loss(
        TEACHER, STUDENT, sample_weight=weights
    )
    np.testing.assert_allclose(
        float(value), (per_sample * weights).sum() / len(weights), rtol=1e-5
    )


def test_multi_output_structure_with_skipped_output():
    loss = kd.LogitsDistillation(2.0, loss=["kl_divergence", None])
    value = loss.compute_loss([TEACHER, TEACHER], [STUDENT, TEACHER * 0])
    np.testing.assert_allclose(
        float(value), np_hinton_kl(TEACHER, STUDENT, 2.0).mean(), rtol=1e-5
    )


REG_T = RNG.normal(size=(6, 2)).astype("float32")
REG_S = RNG.normal(size=(6, 2)).astype("float32")
REG_Y = RNG.normal(size=(6, 2)).astype("float32")


def np_huber(error, delta):
    a = np.abs(error)
    return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mse", ((REG_S - REG_T) ** 2).mean(-1)),
        ("mae", np.abs(REG_S - REG_T).mean(-1)),
        ("huber", np_huber(REG_S - REG_T, 0.5).mean(-1)),
    ],
)
def test_regression_distances(name, expected):
    loss = kd.RegressionDistillation(name, delta=0.5 if name == "huber" else None)
    np.testing.assert_allclose(
        float(loss.compute_loss(REG_T, REG_S)), expected.mean(), rtol=1e-5
    )


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_teacher_bounded_matches_chen_et_al(margin):
    student_error = ((REG_S - REG_Y) ** 2).sum(-1)
    teacher_error = ((REG_T - REG_Y) ** 2).sum(-1)
    expected = np.where(student_error + margin > teacher_error, student_error, 0.0)
    assert 0 < (expected > 0).sum() < len(expected)  # both branches covered
    loss = kd.RegressionDistillation("teacher_bounded", margin=margin)
    value = loss.compute_loss(REG_T, REG_S, y_true=REG_Y)
    np.testing.assert_allclose(float(value), expected.mean(), rtol=1e-5)


def test_teacher_bounded_accepts_rank_one_labels():
    t, s, y = REG_T[:, :1], REG_S[:, :1], REG_Y[:, 0]
    per_sample = losses.teacher_bounded_regression(y, t, s)
    student_error = (s[:, 0] - y) ** 2
    teacher_error = (t[:, 0] - y) ** 2
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(per_sample),
        np.where(student_error > teacher_error, student_error, 0.0),
        rtol=1e-5,
    )


def test_teacher_bounded_without_labels_says_how_to_fix():
    loss = kd.RegressionDistillation("teacher_bounded")
    with pytest.raises(ValueError, match="needs labels"):
        loss.compute_loss(REG_T, REG_S)


def test_feature_distillation_averages_keras_loss_over_feature_axes():
    t = RNG.normal(size=(3, 4, 5)).astype("float32")
    s = RNG.normal(size=(3, 4, 5)).astype("float32")
    loss = kd.FeatureDistillation("mse")
    np.testing.assert_allclose(
        float(loss.compute_loss(t, s)), ((t - s) ** 2).mean(), rtol=1e-5
    )


def test_custom_loss_subclass():
    class L1(kd.DistillationLoss):
        def call(self, teacher_outputs, student_outputs):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs), -1)

    np.testing.assert_allclose(
        float(L1().compute_loss(REG_T, REG_S)), np.abs(REG_T - REG_S).mean(), rtol=1e-5
    )


@pytest.mark.parametrize(
    "loss",
    [
        kd.LogitsDistillation(
            temperature=2.5, loss="soft_cross_entropy", from_logits=False
        ),
        kd.RegressionDistillation("teacher_bounded", margin=0.2),
        kd.FeatureDistillation("cosine_similarity", "a", "b"),
        kd.FeatureDistillation(keras.losses.MeanAbsoluteError(), "a", "b"),
    ],
)
def test_get_config_round_trip(loss):
    config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(
        float(restored.compute_loss(REG_T, REG_S, y_true=REG_Y))
        if isinstance(loss, kd.RegressionDistillation)
        else float(restored.compute_loss(REG_T, REG_S)),
        float(loss.compute_loss(REG_T, REG_S, y_true=REG_Y))
        if isinstance(loss, kd.RegressionDistillation)
        else float(loss.compute_loss(REG_T, REG_S)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: kd.LogitsDistillation(temperature=0), ValueError, "temperature > 0"),
        (lambda: kd.LogitsDistillation(temperature=-1), ValueError, "temperature=-1"),
        (lambda: kd.LogitsDistillation(temperature="4"), TypeError, "number"),
        (lambda: kd.LogitsDistillation(loss="mse"), ValueError, "kl_divergence"),
        (lambda: kd.LogitsDistillation(loss=[None]), ValueError, "non-None"),
        (lambda: kd.RegressionDistillation("l3"), ValueError, "teacher_bounded"),
        (
            lambda: kd.RegressionDistillation("teacher_bounded", margin=-1),
            ValueError,
            "margin >= 0",
        ),
        (
            lambda: kd.RegressionDistillation("mse", delta=2.0),
            ValueError,
            "`delta` only with loss='huber'",
        ),
        (
            lambda: kd.RegressionDistillation("huber", margin=0.1),
            ValueError,
            "`margin` only with loss='teacher_bounded'",
        ),
        (lambda: kd.FeatureDistillation("no_such_loss"), ValueError, "no_such_loss"),
    ],
)
def test_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_temperature_setter_validates_and_assigns():
    loss = kd.LogitsDistillation(4.0)
    loss.temperature = 2.0
    assert float(loss.temperature.numpy()) == 2.0
    with pytest.raises(ValueError, match="temperature > 0"):
        loss.temperature = 0.0


class MeanGap(kd.DistillationLoss):
    """A `call` that reduces the batch itself, with a plain mean."""

    def call(self, teacher_outputs, student_outputs):
        return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs))


def test_call_returning_one_value_per_batch():
    loss = MeanGap()
    got = float(loss.compute_loss(TEACHER, STUDENT))
    np.testing.assert_allclose(got, np.abs(TEACHER - STUDENT).mean(), rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"one loss value per sample, shape \(batch,\)"
    ):
        loss.compute_loss(TEACHER, STUDENT, sample_weight=np.ones(5, "float32"))
