"""Each feature loss against a numpy re-computation of its paper's formula,
written with plain loops over samples, pairs and triplets."""

import itertools

import keras
import numpy as np
import pytest
from conftest import value_and_gradients

import kerasdistill as kd
from kerasdistill.losses import feature_functions as fl

RNG = np.random.default_rng(7)
MAPS_T = RNG.normal(size=(5, 3, 4, 6)).astype("float32")  # (b, h, w, c)
MAPS_S = RNG.normal(size=(5, 3, 4, 2)).astype("float32")
VEC_T = RNG.normal(size=(5, 7)).astype("float32")
VEC_S = RNG.normal(size=(5, 3)).astype("float32")


def per_sample(function, teacher, student):
    return keras.ops.convert_to_numpy(function(teacher, student))


def huber(x, delta=1.0):
    return np.where(np.abs(x) <= delta, 0.5 * x**2, delta * (np.abs(x) - 0.5 * delta))


def test_hint_is_fitnets_half_squared_distance_over_half_the_elements():
    student = MAPS_T + RNG.normal(size=MAPS_T.shape).astype("float32")
    n = MAPS_T[0].size
    paper = [0.5 * np.sum((MAPS_T[i] - student[i]) ** 2) for i in range(5)]
    np.testing.assert_allclose(
        per_sample(fl.hint_mse, MAPS_T, student), np.array(paper) * 2 / n, rtol=1e-5
    )


def test_cosine_distance():
    student = MAPS_T + RNG.normal(size=MAPS_T.shape).astype("float32")
    expected = [
        1 - np.dot(t.ravel(), s.ravel()) / np.linalg.norm(t) / np.linalg.norm(s)
        for t, s in zip(MAPS_T, student)
    ]
    np.testing.assert_allclose(
        per_sample(fl.cosine_distance, MAPS_T, student), expected, rtol=1e-5, atol=1e-6
    )


def test_attention_transfer_matches_zagoruyko_eq_2():
    expected = []
    for t, s in zip(MAPS_T, MAPS_S):  # channels differ: attention sums them
        q_t = (np.abs(t) ** 2).sum(-1).ravel()
        q_s = (np.abs(s) ** 2).sum(-1).ravel()
        expected.append(
            np.linalg.norm(q_s / np.linalg.norm(q_s) - q_t / np.linalg.norm(q_t))
        )
    np.testing.assert_allclose(
        per_sample(fl.attention_transfer, MAPS_T, MAPS_S), expected, rtol=1e-5
    )


def test_similarity_preserving_matches_tung_and_mori():
    b = len(MAPS_T)
    q_t, q_s = MAPS_T.reshape(b, -1), MAPS_S.reshape(b, -1)
    g_t, g_s = q_t @ q_t.T, q_s @ q_s.T
    g_t = g_t / np.linalg.norm(g_t, axis=1, keepdims=True)
    g_s = g_s / np.linalg.norm(g_s, axis=1, keepdims=True)
    paper = np.sum((g_t - g_s) ** 2) / b**2
    values = per_sample(fl.similarity_preserving, MAPS_T, MAPS_S)
    np.testing.assert_allclose(values.mean(), paper, rtol=1e-5)
    np.testing.assert_allclose(values, ((g_t - g_s) ** 2).sum(1) / b, rtol=1e-5)


def np_distances(x):
    x = x.reshape(len(x), -1)
    return np.array([[np.linalg.norm(a - b) for b in x] for a in x])


def test_rkd_distance_matches_park_et_al():
    b = len(VEC_T)
    pairs = [(i, j) for i in range(b) for j in range(b) if i != j]
    d_t, d_s = np_distances(VEC_T), np_distances(VEC_S)
    mu_t = np.mean([d_t[i, j] for i, j in pairs])
    mu_s = np.mean([d_s[i, j] for i, j in pairs])
    terms = [huber(d_s[i, j] / mu_s - d_t[i, j] / mu_t) for i, j in pairs]
    values = per_sample(fl.rkd_distance, VEC_T, VEC_S)
    np.testing.assert_allclose(values.mean(), np.mean(terms), rtol=1e-5)
    assert values.mean() > 0


def np_cosine_angle(x, i, j, k):
    e_ij = (x[i] - x[j]) / np.linalg.norm(x[i] - x[j])
    e_kj = (x[k] - x[j]) / np.linalg.norm(x[k] - x[j])
    return np.dot(e_ij, e_kj)


def test_rkd_angle_matches_park_et_al():
    triplets = list(itertools.permutations(range(len(VEC_T)), 3))
    terms = [
        huber(np_cosine_angle(VEC_S, *t) - np_cosine_angle(VEC_T, *t)) for t in triplets
    ]
    values = per_sample(fl.rkd_angle, VEC_T, VEC_S)
    np.testing.assert_allclose(values.mean(), np.mean(terms), rtol=1e-5)
    by_vertex = [
        np.mean(
            [
                huber(np_cosine_angle(VEC_S, i, j, k) - np_cosine_angle(VEC_T, i, j, k))
                for i, jj, k in triplets
                if jj == j
            ]
        )
        for j in range(len(VEC_T))
    ]
    np.testing.assert_allclose(values, by_vertex, rtol=1e-5)


def test_pkt_matches_passalis_and_tefas():
    b = len(VEC_T)

    def conditional(x):
        kernel = np.array(
            [
                [
                    0.5 * (np.dot(a, c) / np.linalg.norm(a) / np.linalg.norm(c) + 1)
                    for c in x
                ]
                for a in x
            ]
        )
        return np.array(
            [
                [
                    kernel[i, j] / sum(kernel[i, k] for k in range(b) if k != i)
                    if j != i
                    else 0.0
                    for j in range(b)
                ]
                for i in range(b)
            ]
        )

    p, q = conditional(VEC_T), conditional(VEC_S)
    paper = sum(
        p[i, j] * np.log(p[i, j] / q[i, j])
        for i in range(b)
        for j in range(b)
        if i != j
    )
    values = per_sample(fl.pkt, VEC_T, VEC_S)
    np.testing.assert_allclose(values.sum(), paper, rtol=1e-5)


def test_gram_matches_gatys_style_loss():
    student = RNG.normal(size=MAPS_T.shape).astype("float32")
    n, m = MAPS_T.shape[-1], MAPS_T.shape[1] * MAPS_T.shape[2]
    expected = []
    for t, s in zip(MAPS_T, student):
        f_t, f_s = t.reshape(m, n).T, s.reshape(m, n).T  # (N, M)
        expected.append(np.sum((f_s @ f_s.T - f_t @ f_t.T) ** 2) / (4 * n**2 * m**2))
    np.testing.assert_allclose(
        per_sample(fl.gram_matrix, MAPS_T, student), expected, rtol=1e-5
    )


def test_relational_sample_weight_weights_each_samples_share():
    weights = np.array([1.0, 0.0, 2.0, 0.5, 1.0], "float32")
    loss = kd.FeatureDistillation("similarity_preserving")
    values = per_sample(fl.similarity_preserving, MAPS_T, MAPS_S)
    weighted = float(loss.compute_loss(MAPS_T, MAPS_S, sample_weight=weights))
    np.testing.assert_allclose(
        weighted, (values * weights).sum() / len(weights), rtol=1e-5
    )


@pytest.mark.parametrize(
    "name, minimum",
    [("similarity_preserving", 2), ("rkd_distance", 2), ("rkd_angle", 3), ("pkt", 2)],
)
def test_relational_losses_refuse_too_small_a_batch(name, minimum):
    loss = kd.FeatureDistillation(name)
    small = VEC_T[: minimum - 1]
    with pytest.raises(ValueError, match=f"needs a batch of at least {minimum}"):
        loss.compute_loss(small, small)
    assert np.isfinite(float(loss.compute_loss(VEC_T[:minimum], VEC_T[:minimum] * 2)))


def test_gradients_are_finite_when_student_equals_teacher():
    for name in fl.FEATURE_LOSSES:
        teacher = MAPS_T if name in ("attention_transfer", "gram") else VEC_T
        loss = kd.FeatureDistillation(name)
        _, (gradient,) = value_and_gradients(
            lambda s, loss=loss, teacher=teacher: loss.compute_loss(teacher, s), teacher
        )
        assert np.all(np.isfinite(gradient)), name


@pytest.mark.tensorflow_only("a tf.function with an unknown batch size under XLA")
def test_too_small_batches_give_zero_not_nan_under_xla():
    import tensorflow as tf

    """XLA drops the run-time batch check; the losses stay finite there."""
    names = ("similarity_preserving", "rkd_distance", "pkt", "rkd_angle")
    function = tf.function(
        lambda t, s: [fl.FEATURE_LOSSES[name][0](t, s) for name in names],
        jit_compile=True,
        input_signature=[tf.TensorSpec((None, 7)), tf.TensorSpec((None, 3))],
    )
    for batch, too_small in ((1, names), (2, names[-1:])):
        for name, values in zip(names, function(VEC_T[:batch], VEC_S[:batch])):
            assert np.all(np.isfinite(values.numpy())), (name, batch)
            if name in too_small:
                np.testing.assert_allclose(values.numpy(), 0.0, atol=1e-6)
