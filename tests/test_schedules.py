"""Schedules: values against closed forms, configs, argument checks."""

import math

import keras
import numpy as np
import pytest

import kerasdistill as kd
from kerasdistill.schedules import curves as schedules

STEPS = np.arange(0, 30)


def test_constant():
    assert [schedules.Constant(4)(s) for s in (0, 5, 100)] == [4.0, 4.0, 4.0]


def test_linear_matches_numpy_interp():
    schedule = schedules.Linear(0.9, 0.3, steps=6, begin=2)
    expected = np.interp(STEPS, [2, 8], [0.9, 0.3])
    np.testing.assert_allclose([schedule(s) for s in STEPS], expected, atol=1e-12)


def test_cosine_matches_formula():
    schedule = schedules.Cosine(8.0, 1.0, steps=10, begin=3)
    t = np.clip((STEPS - 3) / 10, 0, 1)
    expected = 1.0 + 7.0 * 0.5 * (1 + np.cos(np.pi * t))
    np.testing.assert_allclose([schedule(s) for s in STEPS], expected, atol=1e-12)


def test_exponential_decay_progressive_temperature():
    schedule = schedules.ExponentialDecay(10.0, 0.5, end=1.0)
    assert [schedule(e) for e in range(7)] == [10.0, 5.0, 2.5, 1.25, 1.0, 1.0, 1.0]


def test_exponential_decay_staircase_begin_and_ceiling():
    smooth = schedules.ExponentialDecay(2.0, 0.25, decay_steps=4, begin=2)
    expected = 2.0 * 0.25 ** (np.maximum(STEPS - 2, 0) / 4)
    np.testing.assert_allclose([smooth(s) for s in STEPS], expected, rtol=1e-12)
    stairs = schedules.ExponentialDecay(2.0, 0.25, decay_steps=4, staircase=True)
    expected = 2.0 * 0.25 ** np.floor(STEPS / 4)
    np.testing.assert_allclose([stairs(s) for s in STEPS], expected, rtol=1e-12)
    rising = schedules.ExponentialDecay(1.0, 2.0, end=5.0)
    assert [rising(s) for s in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    constant = schedules.ExponentialDecay(4.0, 1.0, end=1.0)  # rate 1: no bound
    assert [constant(s) for s in range(3)] == [4.0, 4.0, 4.0]


def test_piecewise_changes_at_each_boundary():
    schedule = schedules.Piecewise([5, 10], [4.0, 2.0, 1.0])
    expected = np.select([STEPS < 5, STEPS < 10], [4.0, 2.0], 1.0)
    np.testing.assert_array_equal([schedule(s) for s in STEPS], expected)


def test_warmup_hold_reproduces_dkd_warmup():
    # DKD (mdistiller): min(epoch / 20, 1) with epochs from 1, i.e. from
    # Keras's 0-based index e: min((e + 1) / 20, 1).
    schedule = schedules.WarmupHold(1.0, 19, start=0.05)
    expected = np.minimum((STEPS + 1) / 20, 1.0)
    np.testing.assert_allclose([schedule(s) for s in STEPS], expected, atol=1e-12)
    assert schedules.WarmupHold(3.0, 0)(0) == 3.0


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.Constant(2.0),
        schedules.Linear(0.9, 0.3, 9, begin=1),
        schedules.Cosine(4.0, 1.0, 5),
        schedules.ExponentialDecay(10.0, 0.5, 2, True, 1.0, 1),
        schedules.Piecewise([2, 4], [0.1, 0.2, 0.3]),
        schedules.WarmupHold(1.0, 4, start=0.2),
    ],
    ids=lambda s: type(s).__name__,
)
def test_config_round_trip(schedule):
    rebuilt = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert type(rebuilt) is type(schedule)
    assert rebuilt.get_config() == schedule.get_config()
    assert [rebuilt(s) for s in range(12)] == [schedule(s) for s in range(12)]
    assert type(schedule).__name__ in repr(schedule)


def test_get_accepts_numbers_callables_and_configs():
    assert schedules.get(0.5)(3) == 0.5
    fn = lambda step: 1.0 / (step + 1)  # noqa: E731
    assert schedules.get(fn) is fn
    config = keras.saving.serialize_keras_object(schedules.Linear(1.0, 0.0, 4))
    assert schedules.get(config)(2) == 0.5
    with pytest.raises(TypeError, match="Expected a schedule"):
        schedules.get("linear")


def test_custom_schedule_subclass():
    class Halving(kd.schedules.Schedule):
        def __init__(self, start):
            self.start = start

        def __call__(self, step):
            return self.start / 2**step

        def get_config(self):
            return {"start": self.start}

    assert Halving.from_config(Halving(8.0).get_config())(3) == 1.0
    with pytest.raises(NotImplementedError, match="__call__"):
        schedules.Schedule()(0)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: schedules.Linear(1.0, 0.0, 0), ValueError, "steps >= 1"),
        (lambda: schedules.Linear(1.0, 0.0, 2.5), TypeError, "integer"),
        (lambda: schedules.Cosine(1.0, math.nan, 2), ValueError, "nan"),
        (lambda: schedules.ExponentialDecay(1.0, 0.0), ValueError, "rate > 0"),
        (
            lambda: schedules.ExponentialDecay(0.5, 0.5, end=1.0),
            ValueError,
            "start` on the floor's side of `end`",
        ),
        (
            lambda: schedules.ExponentialDecay(6.0, 2.0, end=5.0),
            ValueError,
            "start` on the ceiling's side of `end`",
        ),
        (lambda: schedules.Piecewise([3, 3], [1, 2, 3]), ValueError, "increase"),
        (lambda: schedules.Piecewise([3], [1.0]), ValueError, "one more value"),
        (lambda: schedules.WarmupHold(1.0, -1), ValueError, "warmup_steps >= 0"),
        (lambda: schedules.Constant("4"), TypeError, "number"),
    ],
)
def test_bad_arguments(build, error, message):
    with pytest.raises(error, match=message):
        build()
