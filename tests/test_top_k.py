"""Top-k token distillation: the loss against numpy, rank-3 logits with a
padding mask, the full loss at k = vocabulary, serialization, and a cache
that stores O(k) per token and trains as the live teacher does."""

import os
import warnings

import keras
import numpy as np
import pytest
from conftest import as_numpy

import kerasdistill as kd

VOCAB, SEQ = 50, 6


def numpy_top_k_kl(t, s, k, temperature):
    """Top-K KD: the teacher's k largest logits renormalised, the student's
    full-vocabulary log-softmax read at those indices."""
    index = np.argsort(-t, axis=-1)[..., :k]
    t_k = np.take_along_axis(t, index, -1) / temperature
    log_p_t = t_k - np.log(np.sum(np.exp(t_k), -1, keepdims=True))
    s_t = s / temperature
    log_q = s_t - np.log(np.sum(np.exp(s_t), -1, keepdims=True))
    log_q_k = np.take_along_axis(log_q, index, -1)
    kl = np.sum(np.exp(log_p_t) * (log_p_t - log_q_k), -1) * temperature**2
    cross_entropy = -np.sum(np.exp(log_p_t) * log_q_k, -1) * temperature**2
    return kl, cross_entropy


def logits(seed, shape=(3, SEQ, VOCAB)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32") * 3


def token_model(width, name):
    """A tiny token-level model: ids (batch, SEQ) -> logits (batch, SEQ, VOCAB)."""
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    hidden = keras.layers.Embedding(VOCAB, width, name=f"{name}_embedding")(ids)
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(hidden)
    return keras.Model(
        ids, keras.layers.Dense(VOCAB, name=f"{name}_logits")(hidden), name=name
    )


def token_data(n=24):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, size=(n, SEQ)).astype("int32")
    mask = (np.arange(SEQ)[None] < rng.integers(2, SEQ + 1, size=(n, 1))).astype(
        "float32"
    )
    return ids, np.roll(ids, -1, axis=1), mask


@pytest.mark.parametrize("loss", ["kl_divergence", "soft_cross_entropy"])
def test_top_k_loss_matches_numpy_per_position(loss):
    t, s = logits(0), logits(1)
    kl, cross_entropy = numpy_top_k_kl(t, s, k=5, temperature=2.0)
    expected = kl if loss == "kl_divergence" else cross_entropy
    function = {
        "kl_divergence": kd.losses.top_k_kl_divergence,
        "soft_cross_entropy": kd.losses.top_k_soft_cross_entropy,
    }[loss]
    got = function(kd.losses.top_k_targets(t, 5), s, 2.0)
    np.testing.assert_allclose(as_numpy(got), expected, rtol=1e-5, atol=1e-6)
    assert as_numpy(got).shape == (3, SEQ)
    # The loss gives one value per sample: the mean over its positions.
    got = kd.LogitsDistillation(2.0, loss=loss, top_k=5).per_sample_loss(t, s)
    np.testing.assert_allclose(as_numpy(got), expected.mean(-1), rtol=1e-5)


def test_top_k_equal_to_the_vocabulary_is_the_full_loss():
    t, s = logits(2), logits(3)
    full = kd.LogitsDistillation(3.0).per_sample_loss(t, s)
    top_all = kd.LogitsDistillation(3.0, top_k=VOCAB).per_sample_loss(t, s)
    np.testing.assert_array_equal(as_numpy(top_all), as_numpy(full))
    # The top-k formula itself, with every index kept, is that loss too.
    targets = kd.losses.top_k_targets(t, VOCAB)
    formula = kd.losses.top_k_kl_divergence(targets, s, 3.0)
    np.testing.assert_allclose(
        as_numpy(formula),
        as_numpy(kd.losses.logits_kl_divergence(t, s, 3.0)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_padding_mask_as_sample_weight_leaves_padded_positions_out():
    t, s = logits(4), logits(5)
    mask = np.ones((3, SEQ), "float32")
    mask[:, 4:] = 0.0
    loss = kd.LogitsDistillation(2.0, top_k=7)
    value = float(as_numpy(loss.compute_loss(t, s, sample_weight=mask)))
    kl, _ = numpy_top_k_kl(t, s, 7, 2.0)
    # The mean over the unpadded positions, as Keras reduces a masked sequence.
    np.testing.assert_allclose(value, np.sum(kl * mask) / mask.sum(), rtol=1e-5)
    t2, s2 = t.copy(), s.copy()
    t2[:, 4:], s2[:, 4:] = logits(6)[:, 4:], logits(7)[:, 4:]
    changed = float(as_numpy(loss.compute_loss(t2, s2, sample_weight=mask)))
    np.testing.assert_allclose(changed, value, rtol=1e-6)


def test_bad_top_k_is_refused():
    with pytest.raises(ValueError, match="top_k >= 1"):
        kd.LogitsDistillation(top_k=0)
    with pytest.raises(TypeError, match="top_k"):
        kd.LogitsDistillation(top_k=2.5)
    with pytest.raises(
        ValueError, match=f"top_k <= the number of classes \\({VOCAB}\\)"
    ):
        kd.LogitsDistillation(top_k=VOCAB + 1).validate_outputs(logits(0), logits(1))


def test_top_k_distiller_round_trips(tmp_path):
    loss = kd.LogitsDistillation(2.0, loss="soft_cross_entropy", top_k=8)
    restored = kd.LogitsDistillation.from_config(loss.get_config())
    assert (restored.top_k, restored.loss) == (8, "soft_cross_entropy")
    distiller = kd.Distiller(
        token_model(16, "teacher"), token_model(8, "student"), loss
    )
    distiller.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    ids, labels, mask = token_data()
    distiller.fit(ids, labels, sample_weight=mask, epochs=1, batch_size=12, verbose=0)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    assert loaded.distillation_losses[0].top_k == 8
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), distiller.predict(ids, verbose=0), rtol=1e-5
    )


def test_top_k_cache_stores_k_per_token_and_trains_as_the_live_teacher(tmp_path):
    ids, labels, mask = token_data()
    teacher = token_model(16, "teacher")
    losses = [kd.LogitsDistillation(2.0, top_k=4)]

    def fit(data, **kwargs):
        keras.utils.set_random_seed(3)
        distiller = kd.Distiller(teacher, token_model(8, "student"), losses)
        distiller.compile(
            "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        history = distiller.fit(data, epochs=2, verbose=0, **kwargs).history
        return history, distiller.student.get_weights()

    expected, expected_weights = fit(
        ids, y=labels, sample_weight=mask, batch_size=8, shuffle=False
    )
    cached = kd.cache_teacher_outputs(
        teacher,
        (ids, labels, mask),
        losses,
        batch_size=8,
        shuffle=False,
        path=str(tmp_path / "top_k"),
    )
    x, _, _ = keras.utils.unpack_x_y_sample_weight(cached[0])
    targets = x[kd.cache.marker_key(teacher)]["outputs"]
    assert sorted(targets) == ["top_k_indices", "top_k_logits"]
    assert tuple(targets["top_k_logits"].shape) == (8, SEQ, 4)
    assert targets["top_k_indices"].dtype.name == "int32"
    np.testing.assert_allclose(  # the teacher's 4 largest logits, largest first
        targets["top_k_logits"],
        -np.sort(-as_numpy(teacher(ids[:8])), axis=-1)[..., :4],
        rtol=1e-6,
    )
    history, weights = fit(cached)
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5)
    for a, b in zip(weights, expected_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    full = kd.cache_teacher_outputs(
        teacher,
        (ids, labels, mask),
        [kd.LogitsDistillation(2.0)],
        batch_size=8,
        path=str(tmp_path / "full"),
    )
    assert full is not None
    sizes = {name: _disk_bytes(tmp_path / name) for name in ("top_k", "full")}
    # 4 logits + 4 int32 indices per token instead of 50 logits.
    assert sizes["top_k"] < 0.35 * sizes["full"], sizes


def test_a_top_k_cache_is_refused_by_a_full_loss_and_mixed_losses_warn():
    ids, labels, _ = token_data(8)
    teacher = token_model(16, "teacher")
    cached = kd.cache_teacher_outputs(
        teacher, (ids, labels), kd.LogitsDistillation(top_k=4), batch_size=8
    )
    distiller = kd.Distiller(
        teacher, token_model(8, "student"), kd.LogitsDistillation()
    )
    distiller.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    with pytest.raises(ValueError, match="top 4 logits per position"):
        distiller.fit(cached, epochs=1, verbose=0)
    mixed = [kd.LogitsDistillation(top_k=4), kd.DIST()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = kd.cache_teacher_outputs(teacher, (ids, labels), mixed, batch_size=8)
    assert any("stores its full outputs" in str(w.message) for w in caught)
    x, _ = full[0]
    assert tuple(x[kd.cache.marker_key(teacher)]["outputs"].shape) == (8, SEQ, VOCAB)


def _disk_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
