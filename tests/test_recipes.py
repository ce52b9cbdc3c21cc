"""The ready-made recipes: the callbacks they build and their values."""

import numpy as np
import pytest

import kerasdistill as kd


def values(callback, epochs):
    return [callback.schedule(epoch) for epoch in range(epochs)]


def test_progressive_temperature_halves_down_to_one():
    callback = kd.recipes.progressive_temperature()
    assert isinstance(callback, kd.callbacks.TemperatureScheduler)
    assert values(callback, 7) == [10.0, 5.0, 2.5, 1.25, 1.0, 1.0, 1.0]
    callback = kd.recipes.progressive_temperature(8.0, 0.75, 2.0, loss="soft")
    assert callback.loss == "soft"
    np.testing.assert_allclose(
        values(callback, 8), np.maximum(8.0 * 0.75 ** np.arange(8), 2.0)
    )


def test_progressive_temperature_with_factor_one_keeps_start():
    assert values(kd.recipes.progressive_temperature(4.0, factor=1.0), 3) == [4.0] * 3


def test_alpha_ramp_both_directions():
    labels_first = kd.recipes.alpha_ramp(10)
    assert isinstance(labels_first, kd.callbacks.AlphaScheduler)
    np.testing.assert_allclose(values(labels_first, 10), np.linspace(0.9, 0.3, 10))
    teacher_first = kd.recipes.alpha_ramp(5, start=0.3, end=0.9)
    np.testing.assert_allclose(values(teacher_first, 5), np.linspace(0.3, 0.9, 5))
    assert values(kd.recipes.alpha_ramp(1), 1) == [0.9]


def test_dkd_warmup_matches_the_official_formula():
    # mdistiller: weight * min(epoch / warmup, 1), epochs counted from 1.
    callback = kd.recipes.dkd_warmup(warmup_epochs=20, weight=8.0, loss="dkd")
    assert isinstance(callback, kd.callbacks.LossWeightScheduler)
    assert callback.loss == "dkd"
    epochs = np.arange(1, 31)
    np.testing.assert_allclose(
        values(callback, 30), 8.0 * np.minimum(epochs / 20, 1.0), atol=1e-12
    )
    assert values(kd.recipes.dkd_warmup(1), 3) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: kd.recipes.progressive_temperature(factor=2.0), r"factor in \(0, 1\]"),
        (lambda: kd.recipes.progressive_temperature(floor=0.0), "floor > 0"),
        (
            lambda: kd.recipes.progressive_temperature(start=0.5, floor=1.0),
            r"start >= floor.*Received: start=0.5, floor=1.0",
        ),
        (lambda: kd.recipes.alpha_ramp(10, start=1.2), r"start in \[0, 1\]"),
        (lambda: kd.recipes.alpha_ramp(0), "epochs >= 1. Received: epochs=0"),
        (
            lambda: kd.recipes.dkd_warmup(0),
            "warmup_epochs >= 1. Received: warmup_epochs=0",
        ),
        (lambda: kd.recipes.dkd_warmup(5, weight=-1.0), "weight >= 0"),
    ],
)
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()
