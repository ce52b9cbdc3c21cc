"""Padded sequences: every per-position loss (token KD on `(batch,
positions, vocabulary)` logits, `FeatureDistillation` on hidden states)
reduces as Keras reduces a masked sequence, the mean over the batch's
unpadded positions, whether the padding comes from a `mask=` input or from
a `(batch, positions)` `sample_weight`; a padded position's values do not
change the loss."""

import keras
import numpy as np
import pytest
from conftest import as_numpy

import kerasdistill as kd

BATCH, POSITIONS, VOCAB, TEMPERATURE = 3, 5, 7, 2.0
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], "int32")


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_token_kl(t, s, temperature):
    """`T^2 KL(p_t || p_s)` at each position, float64."""
    log_p = log_softmax(t.astype("float64") / temperature)
    log_q = log_softmax(s.astype("float64") / temperature)
    return np.sum(np.exp(log_p) * (log_p - log_q), -1) * temperature**2


def unpadded_mean(values, mask, position_weight=None):
    """The mean over the batch's unpadded positions (Keras's masked mean):
    `sum(values * weight) / count(unpadded)` over the whole batch."""
    weight = np.ones_like(values) if position_weight is None else position_weight
    keep = (mask == 1) & (weight != 0)
    return np.sum((values * weight)[keep]) / np.sum(keep)


def token_logits(seed):
    rng = np.random.default_rng(seed)
    return (3.0 * rng.normal(size=(BATCH, POSITIONS, VOCAB))).astype("float32")


def repadded(x, seed):
    """`x` with other values at the padded positions."""
    changed = x.copy()
    other = np.random.default_rng(seed).normal(size=x.shape).astype(x.dtype)
    changed[MASK == 0] = 10.0 * other[MASK == 0]
    return changed


def test_token_kd_with_a_padding_sample_weight_is_the_mean_over_unpadded_positions():
    t, s = token_logits(0), token_logits(1)
    expected = unpadded_mean(numpy_token_kl(t, s, TEMPERATURE), MASK)
    loss = kd.LogitsDistillation(TEMPERATURE)
    weight = MASK.astype("float32")
    value = float(as_numpy(loss.compute_loss(t, s, sample_weight=weight)))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    moved = loss.compute_loss(repadded(t, 2), repadded(s, 3), sample_weight=weight)
    np.testing.assert_allclose(float(as_numpy(moved)), value, rtol=1e-6)


def test_token_kd_reads_the_padding_mask_from_the_inputs():
    t, s = token_logits(0), token_logits(1)
    kl = numpy_token_kl(t, s, TEMPERATURE)
    loss = kd.LogitsDistillation(TEMPERATURE, mask="padding_mask")
    inputs = {"token_ids": np.ones_like(MASK), "padding_mask": MASK}
    value = float(as_numpy(loss.compute_loss(t, s, inputs=inputs)))
    np.testing.assert_allclose(value, unpadded_mean(kl, MASK), rtol=1e-5)
    moved = loss.compute_loss(repadded(t, 2), repadded(s, 3), inputs=inputs)
    np.testing.assert_allclose(float(as_numpy(moved)), value, rtol=1e-6)
    # One value per sample, whose batch mean is the masked mean.
    shares = as_numpy(loss.per_sample_loss(t, s, inputs=inputs))
    assert shares.shape == (BATCH,)
    np.testing.assert_allclose(shares.mean(), value, rtol=1e-5)
    # Per-sample weights on top of the mask, as Keras: sum(v w m) / count(m).
    sample_weight = np.array([0.5, 2.0, 1.0], "float32")
    weighted = loss.compute_loss(t, s, sample_weight=sample_weight, inputs=inputs)
    np.testing.assert_allclose(
        float(as_numpy(weighted)),
        np.sum((kl * sample_weight[:, None])[MASK == 1]) / MASK.sum(),
        rtol=1e-5,
    )
    # Per-position weights with the mask: their zeros are padding too.
    position_weight = np.random.default_rng(4).uniform(0.5, 2.0, (BATCH, POSITIONS))
    position_weight[0, 3] = 0.0
    position_weight = position_weight.astype("float32")
    weighted = loss.compute_loss(t, s, sample_weight=position_weight, inputs=inputs)
    np.testing.assert_allclose(
        float(as_numpy(weighted)),
        unpadded_mean(kl, MASK, position_weight),
        rtol=1e-5,
    )


def test_top_k_token_kd_leaves_the_padded_positions_out():
    t, s = token_logits(0), token_logits(1)
    loss = kd.LogitsDistillation(TEMPERATURE, top_k=VOCAB, mask="padding_mask")
    inputs = {"padding_mask": MASK}
    value = float(as_numpy(loss.compute_loss(t, s, inputs=inputs)))
    expected = unpadded_mean(numpy_token_kl(t, s, TEMPERATURE), MASK)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    cached = kd.losses.top_k_targets(t, 3)
    loss = kd.LogitsDistillation(TEMPERATURE, top_k=3)
    full = as_numpy(kd.losses.top_k_kl_divergence(cached, s, TEMPERATURE))
    value = loss.compute_loss(cached, s, sample_weight=MASK.astype("float32"))
    np.testing.assert_allclose(
        float(as_numpy(value)), unpadded_mean(full, MASK), rtol=1e-5
    )


def test_feature_distillation_reduces_as_token_kd():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(BATCH, POSITIONS, 4)).astype("float32")
    s = rng.normal(size=(BATCH, POSITIONS, 4)).astype("float32")
    mse = np.mean((s.astype("float64") - t) ** 2, -1)
    expected = unpadded_mean(mse, MASK)
    masked = kd.FeatureDistillation("mse", mask="padding_mask")
    value = masked.compute_loss(t, s, inputs={"padding_mask": MASK})
    np.testing.assert_allclose(float(as_numpy(value)), expected, rtol=1e-5)
    weighted = kd.FeatureDistillation("mse")
    value = weighted.compute_loss(t, s, sample_weight=MASK.astype("float32"))
    np.testing.assert_allclose(float(as_numpy(value)), expected, rtol=1e-5)
    moved = weighted.compute_loss(
        repadded(t, 6), repadded(s, 7), sample_weight=MASK.astype("float32")
    )
    np.testing.assert_allclose(float(as_numpy(moved)), expected, rtol=1e-5)


def test_a_mask_on_class_logits_or_a_model_without_it_is_refused():
    loss = kd.LogitsDistillation(mask="padding_mask")
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="positions"):
        loss.compute_loss(t, s, inputs={"padding_mask": MASK})
    with pytest.raises(TypeError, match="mask"):
        kd.LogitsDistillation(mask=1.5)
    inputs = keras.Input((POSITIONS,), name="token_ids")
    outputs = keras.layers.Dense(VOCAB)(keras.layers.Embedding(VOCAB, 4)(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'padding_mask'"):
        loss.validate_model_compatibility(model, model)
    restored = kd.LogitsDistillation.from_config(loss.get_config())
    assert restored.mask == "padding_mask"
