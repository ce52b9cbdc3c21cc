"""The divergences of language-model distillation (reverse KL, generalized
JSD, skew KL, skew reverse KL, TVD, next to Hinton's forward KL): against a
float64 numpy re-computation of each formula, their gradients against
central finite differences, stability at logits of +-1e4, class and token
logits with padding, the teacher's top-k support, serialization and the
refusal of bad options."""

import keras
import numpy as np
import pytest
from conftest import as_numpy
from conftest import value_and_gradients

import kerasdistill as kd

TEMPERATURE = 2.0
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], "int32")

FUNCTIONS = {
    "kl_divergence": kd.losses.logits_kl_divergence,
    "reverse_kl": kd.losses.logits_reverse_kl,
    "generalized_jsd": kd.losses.logits_generalized_jsd,
    "skew_kl": kd.losses.logits_skew_kl,
    "skew_reverse_kl": kd.losses.logits_skew_reverse_kl,
    "tvd": kd.losses.logits_tvd,
}

CASES = [
    ("kl_divergence", {}),
    ("reverse_kl", {}),
    ("generalized_jsd", {"beta": 0.5}),
    ("generalized_jsd", {"beta": 0.1}),
    ("generalized_jsd", {"beta": 0.0}),
    ("generalized_jsd", {"beta": 1.0}),
    ("skew_kl", {"skew": 0.1}),
    ("skew_kl", {"skew": 0.0}),
    ("skew_reverse_kl", {"skew": 0.3}),
    ("tvd", {}),
]
IDS = [f"{loss}{''.join(f'-{k}={v}' for k, v in o.items())}" for loss, o in CASES]


def softmax(x, temperature):
    z = np.asarray(x, "float64") / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference(loss, t, s, temperature, beta=None, skew=None):
    """The formula of each divergence on probabilities, in float64, times
    `T^2`: `P` the teacher's distribution, `Q` the student's."""
    p, q = softmax(t, temperature), softmax(s, temperature)

    def kl(a, b):
        return np.sum(a * np.log(a / b), -1)

    if loss == "kl_divergence":
        value = kl(p, q)
    elif loss == "reverse_kl":
        value = kl(q, p)
    elif loss == "generalized_jsd":
        if beta == 0.0:  # TRL's endpoints
            value = kl(p, q)
        elif beta == 1.0:
            value = kl(q, p)
        else:
            m = beta * p + (1 - beta) * q
            value = beta * kl(p, m) + (1 - beta) * kl(q, m)
    elif loss == "skew_kl":
        value = kl(p, skew * p + (1 - skew) * q)
    elif loss == "skew_reverse_kl":
        value = kl(q, skew * q + (1 - skew) * p)
    else:
        value = 0.5 * np.sum(np.abs(p - q), -1)
    return value * temperature**2


def logits(seed, shape):
    return (2.0 * np.random.default_rng(seed).normal(size=shape)).astype("float32")


@pytest.mark.parametrize("loss, options", CASES, ids=IDS)
@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 6)], ids=["class", "token"])
def test_each_divergence_matches_its_formula(loss, options, shape):
    t, s = logits(0, shape), logits(1, shape)
    expected = reference(loss, t, s, TEMPERATURE, **options)
    got = as_numpy(FUNCTIONS[loss](t, s, TEMPERATURE, **options))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    distillation = kd.LogitsDistillation(TEMPERATURE, loss=loss, **options)
    per_sample = as_numpy(distillation.per_sample_loss(t, s))
    np.testing.assert_allclose(
        per_sample, expected.reshape(shape[0], -1).mean(-1), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("loss, options", CASES, ids=IDS)
def test_token_divergences_leave_the_padding_out(loss, options):
    t, s = logits(2, (3, 4, 6)), logits(3, (3, 4, 6))
    expected = reference(loss, t, s, TEMPERATURE, **options)[MASK == 1].mean()
    distillation = kd.LogitsDistillation(
        TEMPERATURE, loss=loss, mask="padding_mask", **options
    )
    value = distillation.compute_loss(t, s, inputs={"padding_mask": MASK})
    np.testing.assert_allclose(float(as_numpy(value)), expected, rtol=1e-5)
    moved_t, moved_s = t.copy(), s.copy()
    moved_t[MASK == 0], moved_s[MASK == 0] = 1e3, -1e3
    moved = distillation.compute_loss(moved_t, moved_s, inputs={"padding_mask": MASK})
    np.testing.assert_allclose(float(as_numpy(moved)), float(as_numpy(value)))


@pytest.mark.parametrize("loss, options", CASES, ids=IDS)
def test_gradients_match_finite_differences(loss, options):
    t, s = logits(4, (2, 5)), logits(5, (2, 5))

    def total(t_, s_):
        return np.sum(reference(loss, t_, s_, TEMPERATURE, **options))

    step = 1e-6
    numeric = []
    for x, other, first in ((t, s, True), (s, t, False)):
        x = x.astype("float64")
        gradient = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            up, down = x.copy(), x.copy()
            up[index] += step
            down[index] -= step
            if first:
                gradient[index] = total(up, other) - total(down, other)
            else:
                gradient[index] = total(other, up) - total(other, down)
        numeric.append(gradient / (2 * step))
    _, (grad_t, grad_s) = value_and_gradients(
        lambda t_, s_: keras.ops.sum(FUNCTIONS[loss](t_, s_, TEMPERATURE, **options)),
        t,
        s,
    )
    np.testing.assert_allclose(grad_t, numeric[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_s, numeric[1], rtol=1e-4, atol=1e-5)


# Teacher and student sure of different tokens, at logits of +-1e4 (T = 1):
# in float64 the distributions are one-hot, and each divergence has a closed
# form (KL: the student's log-probability gap, 2e4; the mixtures: log 1/a).
EXTREMES = {
    "kl_divergence": ({}, 2e4),
    "reverse_kl": ({}, 2e4),
    "generalized_jsd": ({"beta": 0.5}, np.log(2.0)),
    "skew_kl": ({"skew": 0.1}, np.log(10.0)),
    "skew_reverse_kl": ({"skew": 0.25}, np.log(4.0)),
    "tvd": ({}, 1.0),
}


@pytest.mark.parametrize("loss", sorted(EXTREMES))
def test_logits_of_1e4_stay_finite_in_float32(loss):
    options, expected = EXTREMES[loss]
    t = np.array([[1e4, -1e4, 0.0, -1e4]], "float32")
    s = np.array([[-1e4, 1e4, 0.0, -1e4]], "float32")
    value, gradients = value_and_gradients(
        lambda t_, s_: keras.ops.sum(FUNCTIONS[loss](t_, s_, 1.0, **options)), t, s
    )
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    for gradient in gradients:
        assert np.all(np.isfinite(gradient)), gradient
    same = as_numpy(FUNCTIONS[loss](t, t, 1.0, **options))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def top_k_reference(loss, t, s, k, temperature, **options):
    """The divergence between the teacher's top-k distribution and the
    student's full-vocabulary probabilities at those tokens renormalised."""
    index = np.argsort(-t, axis=-1)[..., :k]
    p = softmax(np.take_along_axis(t, index, -1), temperature)
    q = np.take_along_axis(softmax(s, temperature), index, -1)
    q = q / q.sum(-1, keepdims=True)
    # reference() softmaxes its inputs: log-probabilities give them back.
    return reference(loss, np.log(p), np.log(q), 1.0, **options) * temperature**2


@pytest.mark.parametrize("loss, options", CASES[1:], ids=IDS[1:])
def test_top_k_divergences_compare_distributions_on_the_teachers_top_k(loss, options):
    t, s = logits(6, (3, 4, 9)), logits(7, (3, 4, 9))
    targets = kd.losses.top_k_targets(t, 4)
    got = kd.losses.top_k_divergence(targets, s, loss, TEMPERATURE, **options)
    expected = top_k_reference(loss, t, s, 4, TEMPERATURE, **options)
    np.testing.assert_allclose(as_numpy(got), expected, rtol=1e-5, atol=1e-6)
    distillation = kd.LogitsDistillation(TEMPERATURE, loss=loss, top_k=4, **options)
    np.testing.assert_allclose(
        as_numpy(distillation.per_sample_loss(t, s)),
        expected.mean(-1),
        rtol=1e-5,
        atol=1e-6,
    )
    # The same loss on a cache of the teacher's top 6 (it keeps its top 4).
    cached = kd.losses.top_k_targets(t, 6)
    np.testing.assert_allclose(
        as_numpy(distillation.per_sample_loss(cached, s)),
        expected.mean(-1),
        rtol=1e-5,
        atol=1e-6,
    )
    # Every token kept: the full divergence.
    everything = kd.losses.top_k_targets(t, 9)
    full = kd.losses.top_k_divergence(everything, s, loss, TEMPERATURE, **options)
    np.testing.assert_allclose(
        as_numpy(full), reference(loss, t, s, TEMPERATURE, **options), rtol=1e-5
    )


def test_bad_options_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"Expected `beta` in \[0, 1\]. Received: "):
        kd.LogitsDistillation(loss="generalized_jsd", beta=1.5)
    with pytest.raises(ValueError, match=r"Received: skew=-0.1\. Pass a number"):
        kd.LogitsDistillation(loss="skew_kl", skew=-0.1)
    with pytest.raises(TypeError, match="Python number in"):
        kd.LogitsDistillation(loss="generalized_jsd", beta="0.5")
    with pytest.raises(TypeError, match="of type bool"):
        kd.LogitsDistillation(loss="skew_reverse_kl", skew=True)
    with pytest.raises(ValueError, match="option of loss='generalized_jsd'.*Remove"):
        kd.LogitsDistillation(loss="reverse_kl", beta=0.5)
    with pytest.raises(ValueError, match="'skew_kl' or 'skew_reverse_kl'"):
        kd.LogitsDistillation(loss="generalized_jsd", skew=0.1)
    with pytest.raises(ValueError, match="one of"):
        kd.LogitsDistillation(loss="jsd")
    with pytest.raises(ValueError, match="beta"):
        kd.losses.logits_generalized_jsd(logits(0, (2, 3)), logits(1, (2, 3)), beta=2)
    with pytest.raises(ValueError, match="skew"):
        kd.losses.top_k_divergence(
            kd.losses.top_k_targets(logits(0, (2, 5)), 2),
            logits(1, (2, 5)),
            "tvd",
            skew=0.2,
        )
    # The defaults: TRL's beta, DistiLLM's skew; None where unused.
    loss = kd.LogitsDistillation(loss=["generalized_jsd", "skew_kl"])
    assert (loss.beta, loss.skew) == (0.5, 0.1)
    assert (kd.LogitsDistillation().beta, kd.LogitsDistillation().skew) == (None, None)


def token_model(width, name):
    ids = keras.Input((4,), dtype="int32", name="token_ids")
    mask = keras.Input((4,), dtype="int32", name="padding_mask")
    hidden = keras.layers.Embedding(11, width, name=f"{name}_embedding")(ids)
    return keras.Model(
        {"token_ids": ids, "padding_mask": mask},
        keras.layers.Dense(11, name=f"{name}_logits")(hidden),
        name=name,
    )


def test_each_divergence_serializes_and_trains_in_a_distiller(tmp_path):
    losses = [
        kd.LogitsDistillation(1.5, loss=loss, mask="padding_mask", **options)
        for loss, options in CASES
        if loss != "kl_divergence"
    ]
    for loss in losses:
        restored = kd.LogitsDistillation.from_config(loss.get_config())
        assert restored.get_config() == loss.get_config()
    distiller = kd.Distiller(
        token_model(8, "teacher"), token_model(4, "student"), losses
    )
    distiller.compile("adam")
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 11, (8, 4)).astype("int32"),
        "padding_mask": np.repeat(MASK[:2], 4, axis=0),
    }
    history = distiller.fit(x, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    for original, restored in zip(losses, loaded.distillation_losses):
        assert restored.get_config() == original.get_config()
    np.testing.assert_allclose(
        loaded.evaluate(x, verbose=0), distiller.evaluate(x, verbose=0), rtol=1e-5
    )
