"""Schedules: pure functions of the step that give a value.

A schedule is a callable `schedule(step) -> float`, in the style of optax's
schedules: it keeps no state, so the value at step `n` is the same whether
training ran from the start or was resumed at `n`. The step is an epoch
index or a batch index counted from the start of training; which one is
chosen by the callback that reads the schedule
(`kerasdistill.callbacks.AlphaScheduler(..., update_freq="epoch")`).

Any Python callable `step -> number` (including a
`keras.optimizers.schedules.LearningRateSchedule`) can be used where a
schedule is expected; the classes below add a `get_config` so that they can
be saved and rebuilt.
"""

import math
import numbers

import keras

from kerasdistill import checks


@keras.saving.register_keras_serializable(package="kerasdistill")
class Schedule:
    """Base class of the schedules: `schedule(step)` returns a float.

    Subclasses implement `__call__(step)` as a pure function of `step` (an
    integer >= 0) and `get_config()`.

    Example:

    ```python
    class Halving(kerasdistill.schedules.Schedule):
        def __init__(self, start):
            self.start = start

        def __call__(self, step):
            return self.start / 2**step

        def get_config(self):
            return {"start": self.start}
    ```
    """

    def __call__(self, step):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `__call__(step)` returning a float."
        )

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="kerasdistill")
class Constant(Schedule):
    """The same value at every step.

    Args:
        value: The value.

    Example:

    ```python
    schedule = kerasdistill.schedules.Constant(4.0)
    schedule(7)  # 4.0
    ```
    """

    def __init__(self, value):
        checks.check_number(value, "value")
        self.value = value

    def __call__(self, step):
        return float(self.value)

    def get_config(self):
        return {"value": self.value}


class _Transition(Schedule):
    """A move from `start` to `end` over `steps` steps from step `begin`,
    then a hold; subclasses give the shape in `__call__`."""

    def __init__(self, start, end, steps, begin=0):
        checks.check_number(start, "start")
        checks.check_number(end, "end")
        checks.check_integer(steps, "steps", minimum=1)
        checks.check_integer(begin, "begin", minimum=0)
        self.start = start
        self.end = end
        self.steps = steps
        self.begin = begin

    def get_config(self):
        return {
            "start": self.start,
            "end": self.end,
            "steps": self.steps,
            "begin": self.begin,
        }


@keras.saving.register_keras_serializable(package="kerasdistill")
class Linear(_Transition):
    """Moves linearly from `start` to `end` over `steps` steps, then holds.

    `value(step) = start + (end - start) * clip((step - begin) / steps, 0, 1)`.
    It reaches `end` at step `begin + steps`; with `steps = epochs - 1` it
    reaches it at the last epoch of a run.

    Args:
        start: The value up to step `begin`.
        end: The value from step `begin + steps` on.
        steps: Length of the transition, an integer >= 1.
        begin: Step at which the transition starts. Defaults to 0.

    Example:

    ```python
    # alpha from labels-first (0.9) to teacher-first (0.3) over 10 epochs
    schedule = kerasdistill.schedules.Linear(0.9, 0.3, steps=9)
    ```
    """

    def __call__(self, step):
        return self.start + (self.end - self.start) * _progress(
            step, self.begin, self.steps
        )


@keras.saving.register_keras_serializable(package="kerasdistill")
class Cosine(_Transition):
    """Half a cosine from `start` to `end` over `steps` steps, then holds.

    `value(step) = end + (start - end) * (1 + cos(pi * t)) / 2` with
    `t = clip((step - begin) / steps, 0, 1)`.

    Args:
        start: The value up to step `begin`.
        end: The value from step `begin + steps` on.
        steps: Length of the transition, an integer >= 1.
        begin: Step at which the transition starts. Defaults to 0.

    Example:

    ```python
    schedule = kerasdistill.schedules.Cosine(8.0, 1.0, steps=20)
    ```

    Reference:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
        Restarts", ICLR 2017 (the cosine annealing shape).
    """

    def __call__(self, step):
        t = _progress(step, self.begin, self.steps)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))


@keras.saving.register_keras_serializable(package="kerasdistill")
class ExponentialDecay(Schedule):
    """Multiplies `start` by `rate` every `decay_steps` steps, up to a bound.

    `value(step) = start * rate ** (max(step - begin, 0) / decay_steps)`,
    with the exponent rounded down when `staircase=True`. `end`, when given,
    bounds the value: a floor when `rate < 1`, a ceiling when `rate > 1`
    (so `start` must not be below a floor or above a ceiling); with
    `rate = 1` the value stays `start`.

    Args:
        start: The value at step `begin` and before.
        rate: The factor per `decay_steps` steps, > 0.
        decay_steps: Steps per factor, an integer >= 1. Defaults to 1.
        staircase: Whether the value changes only every `decay_steps` steps.
        end: Optional bound (floor or ceiling).
        begin: Step at which the decay starts. Defaults to 0.

    Example:

    ```python
    # progressive temperature: T = 10, halved each epoch, floor 1
    schedule = kerasdistill.schedules.ExponentialDecay(10.0, 0.5, end=1.0)
    [schedule(epoch) for epoch in range(5)]  # [10.0, 5.0, 2.5, 1.25, 1.0]
    ```
    """

    def __init__(self, start, rate, decay_steps=1, staircase=False, end=None, begin=0):
        checks.check_number(start, "start")
        checks.check_positive(rate, "rate")
        checks.check_integer(decay_steps, "decay_steps", minimum=1)
        checks.check_integer(begin, "begin", minimum=0)
        if end is not None:
            checks.check_number(end, "end")
            if (rate < 1 and start < end) or (rate > 1 and start > end):
                bound = "floor" if rate < 1 else "ceiling"
                raise ValueError(
                    f"Expected `start` on the {bound}'s side of `end` (rate="
                    f"{rate} makes `end` a {bound}). Received: start={start}, "
                    f"end={end}, so the value would be `end` from the first "
                    "step. Pass a start beyond the bound, or another `end`."
                )
        self.start = start
        self.rate = rate
        self.decay_steps = decay_steps
        self.staircase = staircase
        self.end = end
        self.begin = begin

    def __call__(self, step):
        exponent = max(step - self.begin, 0) / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        value = self.start * self.rate**exponent
        if self.end is None or self.rate == 1:
            return value
        return max(value, self.end) if self.rate < 1 else min(value, self.end)

    def get_config(self):
        return {
            "start": self.start,
            "rate": self.rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
            "end": self.end,
            "begin": self.begin,
        }


@keras.saving.register_keras_serializable(package="kerasdistill")
class Piecewise(Schedule):
    """A step function: `values[i]` from step `boundaries[i - 1]` on.

    `value(step) = values[k]` where `k` is the number of boundaries `<= step`:
    `values[0]` before `boundaries[0]`, `values[-1]` from `boundaries[-1]`.

    Args:
        boundaries: Increasing integer steps.
        values: One more value than boundaries.

    Example:

    ```python
    schedule = kerasdistill.schedules.Piecewise([5, 10], [4.0, 2.0, 1.0])
    schedule(5)  # 2.0
    ```
    """

    def __init__(self, boundaries, values):
        boundaries, values = list(boundaries), list(values)
        for boundary in boundaries:
            checks.check_integer(boundary, "each boundary", minimum=0)
        for value in values:
            checks.check_number(value, "each value")
        if any(a >= b for a, b in zip(boundaries, boundaries[1:])):
            raise ValueError(
                "Expected `boundaries` to increase strictly. Received: "
                f"boundaries={boundaries}"
            )
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "Expected one more value than boundaries. Received: "
                f"{len(boundaries)} boundaries={boundaries} and "
                f"{len(values)} values={values}."
            )
        self.boundaries = boundaries
        self.values = values

    def __call__(self, step):
        return float(self.values[sum(step >= b for b in self.boundaries)])

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values}


@keras.saving.register_keras_serializable(package="kerasdistill")
class WarmupHold(Schedule):
    """Rises linearly from `start` to `value` in `warmup_steps`, then holds.

    `value(step) = start + (value - start) * min(step / warmup_steps, 1)`;
    with `warmup_steps=0` it is `value` from the first step.

    Args:
        value: The value held after the warm-up.
        warmup_steps: Length of the warm-up, an integer >= 0.
        start: The value at step 0. Defaults to 0.0.

    Example:

    ```python
    # DKD's warm-up: min((epoch + 1) / 20, 1), with 0-based Keras epochs
    schedule = kerasdistill.schedules.WarmupHold(1.0, 19, start=0.05)
    ```
    """

    def __init__(self, value, warmup_steps, start=0.0):
        checks.check_number(value, "value")
        checks.check_integer(warmup_steps, "warmup_steps", minimum=0)
        checks.check_number(start, "start")
        self.value = value
        self.warmup_steps = warmup_steps
        self.start = start

    def __call__(self, step):
        if self.warmup_steps == 0:
            return float(self.value)
        return self.start + (self.value - self.start) * _progress(
            step, 0, self.warmup_steps
        )

    def get_config(self):
        return {
            "value": self.value,
            "warmup_steps": self.warmup_steps,
            "start": self.start,
        }


def get(identifier):
    """Returns a schedule: a number becomes `Constant`, a callable is kept.

    Args:
        identifier: A number, a `Schedule`, any callable `step -> number`, or
            a config dict from `keras.saving.serialize_keras_object`.

    Returns:
        A callable `step -> value`.

    Example:

    ```python
    kerasdistill.schedules.get(0.5)(3)  # 0.5
    ```
    """
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, numbers.Real) and not isinstance(identifier, bool):
        return Constant(identifier)
    if callable(identifier):
        return identifier
    raise TypeError(
        "Expected a schedule: a number, a kerasdistill.schedules.Schedule or "
        f"a callable `step -> value`. Received: {identifier!r} of type "
        f"{type(identifier).__name__}"
    )


def _progress(step, begin, steps):
    return min(max((step - begin) / steps, 0.0), 1.0)
