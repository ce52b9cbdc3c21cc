"""DKD and DIST against numpy re-computations of their papers' formulas."""

import keras
import numpy as np
import pytest
from conftest import make_classifier

import kerasdistill as kd

RNG = np.random.default_rng(3)
TEACHER = (RNG.normal(size=(6, 5)) * 3).astype("float32")
STUDENT = (RNG.normal(size=(6, 5)) * 3).astype("float32")
LABELS = np.array([0, 1, 4, 2, 2, 3])


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(p, q):
    return np.sum(p * np.log(p / q))


def np_dkd(t, s, labels, alpha, beta, temperature):
    values = []
    for z_t, z_s, label in zip(t, s, labels):
        p_t, p_s = softmax(z_t / temperature), softmax(z_s / temperature)
        b_t = np.array([p_t[label], 1 - p_t[label]])
        b_s = np.array([p_s[label], 1 - p_s[label]])
        others = [c for c in range(len(z_t)) if c != label]
        hat_t, hat_s = (
            softmax(z_t[others] / temperature),
            softmax(z_s[others] / temperature),
        )
        values.append(temperature**2 * (alpha * kl(b_t, b_s) + beta * kl(hat_t, hat_s)))
    return np.array(values)


@pytest.mark.parametrize("alpha, beta, temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_zhao_et_al(alpha, beta, temperature):
    expected = np_dkd(TEACHER, STUDENT, LABELS, alpha, beta, temperature)
    got = kd.losses.decoupled_kd(TEACHER, STUDENT, LABELS, alpha, beta, temperature)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-4)
    loss = kd.DKD(alpha=alpha, beta=beta, temperature=temperature)
    np.testing.assert_allclose(
        float(loss.compute_loss(TEACHER, STUDENT, y_true=LABELS)),
        expected.mean(),
        rtol=1e-4,
    )


def test_dkd_with_unit_weights_is_hinton_kl_minus_a_weighted_term():
    """The paper's eq. 5: KD = TCKD + (1 - p_t^T) NCKD."""
    t = 2.0
    p_t = softmax(TEACHER / t)[np.arange(6), LABELS]
    tckd = np_dkd(TEACHER, STUDENT, LABELS, 1.0, 0.0, t)
    nckd = np_dkd(TEACHER, STUDENT, LABELS, 0.0, 1.0, t)
    hinton = keras.ops.convert_to_numpy(
        kd.losses.logits_kl_divergence(TEACHER, STUDENT, t)
    )
    np.testing.assert_allclose(tckd + (1 - p_t) * nckd, hinton, rtol=1e-4)


def test_dkd_takes_one_hot_and_column_labels_and_needs_labels():
    loss = kd.DKD()
    sparse = float(loss.compute_loss(TEACHER, STUDENT, y_true=LABELS))
    one_hot = np.eye(5, dtype="float32")[LABELS]
    assert float(loss.compute_loss(TEACHER, STUDENT, y_true=one_hot)) == pytest.approx(
        sparse
    )
    assert float(
        loss.compute_loss(TEACHER, STUDENT, y_true=LABELS[:, None])
    ) == pytest.approx(sparse)
    with pytest.raises(ValueError, match="DKD needs labels"):
        loss.compute_loss(TEACHER, STUDENT)


def pearson(a, b):
    return np.corrcoef(a, b)[0, 1]


@pytest.mark.parametrize("beta, gamma, temperature", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_matches_huang_et_al(beta, gamma, temperature):
    y_t, y_s = softmax(TEACHER / temperature), softmax(STUDENT / temperature)
    inter = np.mean([1 - pearson(y_s[i], y_t[i]) for i in range(6)])
    intra = np.mean([1 - pearson(y_s[:, j], y_t[:, j]) for j in range(5)])
    expected = temperature**2 * (beta * inter + gamma * intra)
    loss = kd.DIST(beta=beta, gamma=gamma, temperature=temperature)
    np.testing.assert_allclose(
        float(loss.compute_loss(TEACHER, STUDENT)), expected, rtol=1e-4
    )


def test_dist_inter_class_term_is_per_sample():
    values = keras.ops.convert_to_numpy(kd.losses.dist(TEACHER, STUDENT, 1.0, 0.0, 1.0))
    y_t, y_s = softmax(TEACHER), softmax(STUDENT)
    np.testing.assert_allclose(
        values, [1 - pearson(y_s[i], y_t[i]) for i in range(6)], rtol=1e-4
    )


def test_dist_intra_class_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        kd.DIST().compute_loss(TEACHER[:1], STUDENT[:1])
    assert np.isfinite(float(kd.DIST(gamma=0.0).compute_loss(TEACHER[:1], STUDENT[:1])))


@pytest.mark.parametrize(
    "loss", [kd.DKD(alpha=0.5, beta=4.0, temperature=2.0), kd.DIST(2.0, 0.5, 3.0)]
)
def test_get_config_round_trip_and_temperature_variable(loss):
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    kwargs = {"y_true": LABELS}
    assert float(restored.compute_loss(TEACHER, STUDENT, **kwargs)) == pytest.approx(
        float(loss.compute_loss(TEACHER, STUDENT, **kwargs))
    )
    assert not restored.temperature.trainable
    restored.temperature = 1.5
    assert float(restored.temperature.numpy()) == 1.5
    with pytest.raises(ValueError, match="temperature > 0"):
        restored.temperature = 0


def test_dkd_and_dist_train_in_a_distiller_and_log_their_temperature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = np.argmax(x[:, :3], 1)
    distiller = kd.Distiller(
        make_classifier(16, name="teacher"),
        make_classifier(4, name="student"),
        [kd.DKD(temperature=4.0), kd.DIST(temperature=2.0)],
    )
    distiller.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = distiller.fit(x, y, epochs=2, batch_size=16, verbose=0).history
    names = [loss.name for loss in distiller.distillation_losses]
    assert history[f"{names[0]}_temperature"] == [4.0, 4.0]
    assert history[f"{names[1]}_temperature"] == [2.0, 2.0]
    assert np.all(np.isfinite(history["distillation_loss"]))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: kd.DKD(alpha=-1), "alpha >= 0"),
        (lambda: kd.DKD(temperature=0), "temperature > 0"),
        (lambda: kd.DIST(gamma=-0.1), "gamma >= 0"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_softmax_teacher_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="DKD compares logits"):
        kd.Distiller(
            make_classifier(8, activation="softmax"), make_classifier(4), kd.DKD()
        )
