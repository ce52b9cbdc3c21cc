"""Callbacks that drive a `Distiller`'s alpha, temperatures and loss weights
by a schedule during `fit()`.

Each callback is thin, like `keras.callbacks.LearningRateScheduler`: at the
start of every epoch (or of every batch, with `update_freq="batch"`) it
evaluates its schedule at the current step, checks the value, assigns it to
a non-trainable variable of the `Distiller`, and writes it into `logs` so
that `History`, `CSVLogger` and `TensorBoard` record it. Because the
variables are read inside the compiled train function, a new value takes
effect at once, with `jit_compile=True` too, without tracing it again.

The step is counted from the start of training, not of the current `fit()`
call: the epoch index Keras passes (which `initial_epoch` and
`keras.callbacks.BackupAndRestore` set), or `epoch * steps_per_epoch +
batch` per batch. A resumed run therefore gets the values an uninterrupted
run would have had.

With `steps_per_execution = k > 1`, Keras runs `k` batches per call of the
compiled function and calls `on_train_batch_begin` once per call, so a
per-batch schedule is evaluated at the first batch of each group of `k`
(steps `0, k, 2k, ...` of the epoch) and holds for the group.

Every backend. On TensorFlow and PyTorch the variable the compiled step
reads is the one assigned. Under JAX, Keras passes the model's variables
into the jitted train function as state and writes them back (its public
`model.jax_state_sync()`) only at the end of an epoch or when a callback
asks: a value assigned in `on_train_batch_begin` without that would be
ignored until the epoch ends and then overwritten. So a scheduler first
syncs the state (`model.jax_state_sync()`, where the model has it) and then
assigns; Keras then reads the state again before the batch, and the value
takes effect at that batch. A per-batch scheduler assigns (and syncs) only
when its value changes within an epoch, so a piecewise schedule costs
nothing between its boundaries.

Put `CSVLogger` or `TensorBoard` after these callbacks in the `callbacks`
list: Keras passes one `logs` dict along the list, so a logger placed before
a scheduler does not see the value the scheduler writes. (`alpha` and the
temperature are also logged by the `Distiller` itself; the loss weights
only by `LossWeightScheduler`, CTKD's reversal strength only by
`GradientReversalScheduler`.)
"""

import logging
import math
import numbers

import keras
import numpy as np

from kerasdistill import checks
from kerasdistill import logs
from kerasdistill.distiller import Distiller
from kerasdistill.schedules import curves
from kerasdistill.self_distillation.deep_supervision import DeepSupervision
from kerasdistill.self_distillation.mutual import MutualLearning

_UPDATE_FREQS = ("epoch", "batch")

# The models with an `alpha` (`student_loss_weight`) variable and
# `distillation_losses`: what AlphaScheduler and TemperatureScheduler drive.
# (SelfDistiller is a Distiller.)
STUDENT_TRAINERS = (Distiller, DeepSupervision, MutualLearning)


class ScheduleCallback(keras.callbacks.Callback):
    """Base class: assigns a `Distiller` variable from a schedule.

    Subclasses implement `_resolve(distiller)`, returning the variable to
    drive and the name to log it under, and set `expected` (a phrase
    describing the valid values) and `_is_valid(value)`.

    Args:
        schedule: A `kerasdistill.schedules.Schedule`, any callable
            `step -> number`, or a number (a constant).
        update_freq: `"epoch"` (the step is the epoch index) or `"batch"`
            (the step is the batch index counted from the start of
            training).
        verbose: 0: quiet; 1: print each value set at the start of an epoch.
    """

    # on_train_batch_end only writes a value computed from the step into
    # the batch logs, so Keras may run it on its callback thread.
    async_safe = True
    expected = "a finite number"
    # The model types whose variable the callback drives.
    drives = STUDENT_TRAINERS

    def __init__(self, schedule, update_freq="epoch", verbose=0):
        super().__init__()
        checks.check_choice(update_freq, _UPDATE_FREQS, "update_freq")
        self.schedule = curves.get(schedule)
        self.update_freq = update_freq
        self.verbose = verbose
        self.log_name = None
        self._variable = None
        self._steps_per_epoch = None
        self._steps_per_execution = 1
        self._epoch = 0
        self._current = None

    def _resolve(self, distiller):
        raise NotImplementedError

    def _is_valid(self, value):
        return True

    def on_train_begin(self, logs=None):
        if not isinstance(self.model, self.drives):
            names = [f"kerasdistill.{cls.__name__}" for cls in self.drives]
            names = " or ".join(
                [", ".join(names[:-1]), names[-1]] if len(names) > 1 else names
            )
            raise TypeError(
                f"Expected {type(self).__name__} to drive the variables of a "
                f"{names}. Received a model of type "
                f"{type(self.model).__name__}. Pass the callback to the fit() "
                f"of a {names}."
            )
        self._variable, self.log_name = self._resolve(self.model)
        if self.update_freq == "epoch":  # every value of the run, before it
            for epoch in range((self.params or {}).get("epochs") or 0):
                self._checked_value(epoch, epoch)
        self._steps_per_epoch = (self.params or {}).get("steps")
        self._steps_per_execution = getattr(self.model, "steps_per_execution", 1)
        if self.update_freq == "batch" and not self._steps_per_epoch:
            raise ValueError(
                f"{type(self).__name__}(update_freq='batch') counts steps "
                "from the start of training, so it needs the number of "
                "batches per epoch, which Keras does not know for this data "
                "(a dataset of unknown length). Pass `steps_per_epoch` to "
                "fit(), give the dataset a known length (dataset.apply("
                "tf.data.experimental.assert_cardinality(n))), or use "
                "update_freq='epoch'."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._current = None  # assign at the first batch of every epoch
        if self.update_freq == "epoch":
            self._assign(epoch, epoch, batch=None)

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq == "batch":
            self._assign(self._batch_step(batch), self._epoch, batch)

    def on_train_batch_end(self, batch, logs=None):
        if logs is None:
            return
        if self.update_freq == "epoch":
            logs[self.log_name] = self._current
        else:
            # Keras reports the last batch of the group of
            # `steps_per_execution` batches; the value was set at its first.
            # (Not `self.model` here: under JAX that property syncs the
            # state, at every batch.)
            first = batch - self._steps_per_execution + 1
            logs[self.log_name] = self._value(self._batch_step(first))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_name] = float(keras.ops.convert_to_numpy(self._variable))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "update_freq": self.update_freq,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)

    def _batch_step(self, batch):
        return self._epoch * self._steps_per_epoch + batch

    def _value(self, step):
        return _as_float(self.schedule(step))

    def _assign(self, step, epoch, batch):
        value = self._checked_value(step, epoch)
        if batch is not None and value == self._current:
            return  # unchanged within the epoch: no assignment, no sync
        _sync_jax_state(self.model)
        self._set(value)
        self._current = value
        if self.verbose > 0 and batch in (None, 0):
            _print(
                f"\nEpoch {epoch + 1}: {type(self).__name__} setting "
                f"{self.log_name} to {value:.6g}."
            )

    def _checked_value(self, step, epoch):
        """The schedule's value at `step`, as a float in range, or a
        `TypeError` / `ValueError` naming the epoch and the step."""
        where = f"in epoch {epoch + 1} (epoch index {epoch}, step {step})"
        raw = self.schedule(step)
        try:
            value = _as_float(raw)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{type(self).__name__}: the schedule returned {raw!r} "
                f"{where}. Expected a number. Make the schedule return a "
                "float."
            ) from error
        if not math.isfinite(value) or not self._is_valid(value):
            raise ValueError(
                f"{type(self).__name__}: the schedule gave "
                f"{self.log_name}={value} {where}. Expected {self.expected}. "
                "Change the schedule so that it stays in range (for example "
                "bound an ExponentialDecay with `end=`)."
            )
        return value

    def _set(self, value):
        self._variable.assign(value)


@keras.saving.register_keras_serializable(package="kerasdistill")
class AlphaScheduler(ScheduleCallback):
    """Sets `alpha` (`distiller.student_loss_weight`) by a schedule.

    It drives a `Distiller` (and `SelfDistiller`), and the same variable of
    `DeepSupervision` and `MutualLearning`.

    `alpha` weighs the student's own loss against the distillation term:
    `alpha * student_loss + (1 - alpha) * distillation`. A falling alpha
    (for example 0.9 -> 0.3) learns from the labels first and from the
    teacher later; a rising one does the reverse. The value is logged as
    `alpha`.

    Args:
        schedule: A schedule, a callable `step -> alpha`, or a number.
        update_freq: `"epoch"` or `"batch"`.
        verbose: 0 or 1.

    Example:

    ```python
    callback = kerasdistill.callbacks.AlphaScheduler(
        kerasdistill.schedules.Linear(0.9, 0.3, steps=9)
    )
    distiller.fit(x, y, epochs=10, callbacks=[callback])
    ```
    """

    expected = "alpha in [0, 1]"

    def _resolve(self, distiller):
        if isinstance(distiller, Distiller) and not distiller.uses_labels:
            raise ValueError(
                "AlphaScheduler: alpha weighs the student's loss on the "
                "labels, but this fit() has none (a transfer set), so the "
                "objective is the distillation term alone and alpha is not "
                "applied. Drop the AlphaScheduler, or fit on labeled data "
                "(kerasdistill.data.labeled_and_unlabeled mixes labeled and "
                "unlabeled inputs)."
            )
        return distiller.student_loss_weight, "alpha"

    def _is_valid(self, value):
        return 0.0 <= value <= 1.0

    def _set(self, value):
        # Through the property: the Distiller checks that a student loss
        # exists when alpha becomes > 0 on labelled data.
        self.model.student_loss_weight = value


class LossScheduleCallback(ScheduleCallback):
    """A `ScheduleCallback` that drives one distillation loss, chosen by
    `loss`: its index in `distiller.distillation_losses` or its name
    (`None`: the only loss the callback applies to).

    Example:

    ```python
    callback = kerasdistill.callbacks.TemperatureScheduler(4.0, loss=0)
    callback.loss  # 0
    ```
    """

    def __init__(self, schedule, loss=None, update_freq="epoch", verbose=0):
        super().__init__(schedule, update_freq=update_freq, verbose=verbose)
        if loss is not None:
            _check_loss_selector(loss)
        self.loss = loss

    def get_config(self):
        return {**super().get_config(), "loss": self.loss}


@keras.saving.register_keras_serializable(package="kerasdistill")
class TemperatureScheduler(LossScheduleCallback):
    """Sets the temperature of a distillation loss by a schedule.

    It drives a loss of a `Distiller` (and `SelfDistiller`), or the
    distillation loss of `DeepSupervision` and `MutualLearning`.

    The value is logged under the key the `Distiller` uses: `temperature`
    when one loss has a temperature, else `<loss name>_temperature`.

    Args:
        schedule: A schedule, a callable `step -> temperature`, or a number.
        loss: The distillation loss whose temperature to set: its index in
            `distiller.distillation_losses` or its name. Defaults to the only
            loss with a temperature.
        update_freq: `"epoch"` or `"batch"`.
        verbose: 0 or 1.

    Example:

    ```python
    # progressive temperature: T = 10, halved each epoch, floor 1
    callback = kerasdistill.callbacks.TemperatureScheduler(
        kerasdistill.schedules.ExponentialDecay(10.0, 0.5, end=1.0)
    )
    ```
    """

    expected = "a temperature > 0"

    def _resolve(self, distiller):
        losses = distiller.distillation_losses
        log_names = dict(
            (id(loss), name) for loss, name in logs.temperature_names(losses)
        )
        named = list(zip(losses, logs.loss_names(losses)))
        schedulable = {
            name: loss
            for loss, name in named
            if loss.temperature is not None and not loss.learns_temperature
        }
        learned = [name for loss, name in named if loss.learns_temperature]
        if self.loss is None:
            if len(schedulable) != 1:
                raise ValueError(
                    "TemperatureScheduler: expected exactly one distillation "
                    "loss with a temperature variable when `loss` is not "
                    f"given. Received {len(schedulable)}: "
                    f"{list(schedulable)}"
                    + (
                        f" (the temperature of {learned} is learned, not "
                        "scheduled: drive CTKD with GradientReversalScheduler)"
                        if learned
                        else ""
                    )
                    + ". Pass `loss=` (an index or a name)."
                )
            (loss,) = schedulable.values()
        else:
            loss = _find_loss(distiller, self.loss, "TemperatureScheduler")
            if loss.learns_temperature:
                raise ValueError(
                    f"TemperatureScheduler: the distillation loss {self.loss!r} "
                    f"({type(loss).__name__}) learns its temperature, which a "
                    "schedule cannot set. Schedule CTKD's curriculum with "
                    "kerasdistill.callbacks.GradientReversalScheduler (or "
                    "kerasdistill.recipes.curriculum_temperature), or choose "
                    f"one of {list(schedulable)}."
                )
            if loss.temperature is None:
                raise ValueError(
                    f"TemperatureScheduler: the distillation loss {self.loss!r} "
                    f"({type(loss).__name__}) has no temperature variable. "
                    f"Choose one of {list(schedulable)}."
                )
        return loss.temperature, log_names[id(loss)]

    def _is_valid(self, value):
        return value > 0.0


@keras.saving.register_keras_serializable(package="kerasdistill")
class LossWeightScheduler(LossScheduleCallback):
    """Sets the weight of one distillation loss by a schedule.

    The weight is `w_i` in `sum_i(w_i * distillation_loss_i)`; the value is
    logged as `distillation_loss_weight_<i>` (the variable's name), a key
    that does not depend on the losses' generated names.

    Args:
        schedule: A schedule, a callable `step -> weight`, or a number.
        loss: The distillation loss: its index in
            `distiller.distillation_losses` or its name. Defaults to 0.
        update_freq: `"epoch"` or `"batch"`.
        verbose: 0 or 1.

    Example:

    ```python
    # DKD's warm-up of the distillation weight over 20 epochs
    callback = kerasdistill.callbacks.LossWeightScheduler(
        kerasdistill.schedules.WarmupHold(1.0, 19, start=0.05), loss=0
    )
    ```
    """

    expected = "a loss weight >= 0"
    drives = (Distiller,)  # the one model with distillation loss weights

    def __init__(self, schedule, loss=0, update_freq="epoch", verbose=0):
        _check_loss_selector(loss)
        super().__init__(schedule, loss, update_freq=update_freq, verbose=verbose)

    def _resolve(self, distiller):
        loss = _find_loss(distiller, self.loss, "LossWeightScheduler")
        index = distiller.distillation_losses.index(loss)
        return (
            distiller.distillation_loss_weights[index],
            f"distillation_loss_weight_{index}",
        )

    def _is_valid(self, value):
        return value >= 0.0


@keras.saving.register_keras_serializable(package="kerasdistill")
class GradientReversalScheduler(LossScheduleCallback):
    """Sets the gradient-reversal strength `lambda` of a `CTKD` loss by a
    schedule: CTKD's curriculum, from easy (0: the temperature does not
    fight the student) to hard. The value is logged as `reversal_strength`.

    Args:
        schedule: A schedule, a callable `step -> lambda`, or a number.
        loss: Index or name of the CTKD loss. Defaults to the only loss
            with a reversal strength.
        update_freq: `"epoch"` or `"batch"`.
        verbose: 0 or 1.

    Example:

    ```python
    callback = kerasdistill.callbacks.GradientReversalScheduler(
        kerasdistill.schedules.Cosine(0.0, 1.0, steps=10)
    )
    ```
    """

    expected = "a reversal strength >= 0"

    def _resolve(self, distiller):
        if self.loss is not None:
            loss = _find_loss(distiller, self.loss, "GradientReversalScheduler")
            found = [loss] if _has_reversal(loss) else []
        else:
            found = [
                loss for loss in distiller.distillation_losses if _has_reversal(loss)
            ]
        if len(found) != 1:
            raise ValueError(
                "GradientReversalScheduler: expected one distillation loss "
                "with a `reversal_strength` variable (kerasdistill.CTKD). "
                f"Received the losses {[type(loss).__name__ for loss in found or distiller.distillation_losses]}"
                f" with loss={self.loss!r}. Add a CTKD loss, or pass `loss=`."
            )
        return found[0].reversal_strength, "reversal_strength"

    def _is_valid(self, value):
        return value >= 0.0


def _has_reversal(loss):
    return isinstance(getattr(loss, "reversal_strength", None), keras.Variable)


def _sync_jax_state(model):
    """Writes the JAX trainer's state back to the model's variables, so that
    an assignment is the value the next step reads (a no-op elsewhere, and
    when the state is already synced). Keras's `Callback.model` property
    also syncs under JAX; calling `jax_state_sync()` says so explicitly and
    does not depend on it."""
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def _print(message):
    """Prints as Keras's own callbacks do: to stdout when interactive
    logging is on (`keras.utils.disable_interactive_logging()` turns it
    off), else to the `kerasdistill` logger."""
    if keras.utils.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        logging.getLogger("kerasdistill").info(message)


def _check_loss_selector(loss):
    if isinstance(loss, bool) or not isinstance(loss, (numbers.Integral, str)):
        raise TypeError(
            "Expected `loss` to be the index (int) or the name (str) of a "
            f"distillation loss. Received: loss={loss!r} of type "
            f"{type(loss).__name__}"
        )


def _find_loss(distiller, selector, owner):
    found = distiller.distillation_losses
    names = logs.loss_names(found)
    if isinstance(selector, str):
        if selector not in names:
            raise ValueError(
                f"{owner}: no distillation loss is named {selector!r}. "
                f"Received losses named {names}."
            )
        return found[names.index(selector)]
    if not -len(found) <= selector < len(found):
        raise ValueError(
            f"{owner}: expected a loss index in [0, {len(found) - 1}]. "
            f"Received: loss={selector} for {len(found)} losses {names}."
        )
    return found[selector]


def _as_float(value):
    if isinstance(value, (bool, str)) or value is None:
        raise TypeError(f"not a number: {value!r}")
    array = np.asarray(keras.ops.convert_to_numpy(value))
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"not a scalar number: {value!r}")
    return float(array.reshape(()))
