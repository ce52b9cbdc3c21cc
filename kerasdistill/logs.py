"""What History logs for a model that trains a student: one meaning per key.

A `Distiller`'s logs (`val_` prefixed for the validation data):

- `loss`: the objective the optimizer minimises (Keras's own key), with
  the student's regularization losses; `total_loss`: the same value under
  `keras.distillation`'s name;
- `student_loss`: the compiled loss on the labels (the mean over the
  labeled samples of partial labels), on batches with labels;
- `distillation_loss`: `sum_i w_i * distillation_loss_i`;
- `<loss name>_loss`: with several distillation losses, each one's term
  (the names `loss_names` gives)
  `w_i * distillation_loss_i`, as Keras logs each output's loss of a
  multi-output model;
- the compiled metrics, on the labeled samples;
- `alpha` and `temperature` (or `<loss name>_temperature` with several
  tempered losses): the values the training step used, logged for training
  only (they are not properties of the validation data); `alpha` only where
  it is applied, on data with labels.

This module holds the pieces the models share to keep those promises.
"""

import keras
import numpy as np
from keras import ops

from kerasdistill import reduction

# `keras.distillation`'s name for `loss`, logged as a copy of it.
TOTAL_LOSS = "total_loss"
STUDENT_LOSS = "student_loss"
DISTILLATION_LOSS = "distillation_loss"


def loss_names(distillation_losses):
    """The name each distillation loss goes by in the logs and in the
    schedulers' `loss=`: its own name, with `_2`, `_3`, ... for the second,
    third, ... loss of the same name.

    Example:

    ```python
    kerasdistill.logs.loss_names(
        [kerasdistill.FeatureDistillation(), kerasdistill.FeatureDistillation()]
    )
    # ["feature_distillation", "feature_distillation_2"]
    ```
    """
    names = []
    for loss in distillation_losses:
        name, count = loss.name, 1
        while name in names:
            count += 1
            name = f"{loss.name}_{count}"
        names.append(name)
    return names


@keras.saving.register_keras_serializable(package="kerasdistill")
class LossMeans(keras.metrics.Metric):
    """The weighted means over an epoch's batches of several losses, one
    scalar per loss and batch (what `keras.metrics.Mean` computes for one),
    kept in one vector of totals and one of weights: a few operations per
    step for all of them, where every step of an eager PyTorch loop pays
    for each one. Its result is a dict, one key per name.

    Args:
        names: The losses' names, the keys of the result.

    Example:

    ```python
    means = kerasdistill.logs.LossMeans(["student_loss", "distillation_loss"])
    means.update_state({"student_loss": 0.5, "distillation_loss": 2.0}, 32)
    means.result()  # {"student_loss": 0.5, "distillation_loss": 2.0}
    ```
    """

    def __init__(self, names, name="loss_means", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.names = list(names)
        self.totals = self.add_variable(
            shape=(len(self.names),), initializer="zeros", name="totals"
        )
        self.counts = self.add_variable(
            shape=(len(self.names),), initializer="zeros", name="counts"
        )

    def update_state(self, values, weights):
        """Adds each loss of `values` (`{name: scalar}`, the losses of a
        replica's batch as its `compute_loss` scales them) with its weight
        (`weights`: `{name: weight}`, or one weight for all); the losses
        left out keep their means."""
        if not isinstance(weights, dict):
            weights = dict.fromkeys(values, weights)
        weights = [weights.get(name, 0) for name in self.names]
        if all(isinstance(weight, (int, float)) for weight in weights):
            # From numpy: one tensor without an operation per number.
            weights = ops.convert_to_tensor(np.array(weights, self.dtype))
        else:
            weights = ops.stack([ops.cast(weight, self.dtype) for weight in weights])
        zero = ops.zeros((), self.dtype)
        values = ops.stack(
            [
                ops.cast(reduction.unscale_for_replicas(values[name]), self.dtype)
                if name in values
                else zero
                for name in self.names
            ]
        )
        self.totals.assign_add(values * weights)
        self.counts.assign_add(weights)

    def result(self):
        means = ops.unstack(ops.divide_no_nan(self.totals, self.counts))
        return dict(zip(self.names, means))

    def get_config(self):
        return {**super().get_config(), "names": self.names}


def loss_means(distillation_losses):
    """The `LossMeans` of a Distiller: `student_loss`, `distillation_loss`
    and, with several distillation losses, one `<loss name>_loss` each
    (after `loss_names`; with one, it would repeat `distillation_loss`).

    Example:

    ```python
    kerasdistill.logs.loss_means(distiller.distillation_losses).names
    # ["student_loss", "distillation_loss"]
    ```
    """
    return LossMeans(
        [STUDENT_LOSS, DISTILLATION_LOSS, *term_names(distillation_losses)]
    )


def term_names(distillation_losses):
    """The log names of the distillation losses' terms: `<loss name>_loss`
    each, after `loss_names`, when there are several; none for one.

    Example:

    ```python
    kerasdistill.logs.term_names(distiller.distillation_losses)
    ```
    """
    if len(distillation_losses) < 2:
        return []
    return [f"{name}_loss" for name in loss_names(distillation_losses)]


def temperature_names(distillation_losses):
    """`[(loss, log name)]` for each loss with a temperature (scheduled or
    learned): `temperature` for one such loss, else
    `<loss name>_temperature`.

    Example:

    ```python
    kerasdistill.logs.temperature_names([kerasdistill.LogitsDistillation()])
    # [(<LogitsDistillation>, "temperature")]
    ```
    """
    tempered = [
        (loss, name)
        for loss, name in zip(distillation_losses, loss_names(distillation_losses))
        if loss.temperature is not None or loss.learns_temperature
    ]
    return [
        (loss, "temperature" if len(tempered) == 1 else f"{name}_temperature")
        for loss, name in tempered
    ]


@keras.saving.register_keras_serializable(package="kerasdistill")
class LastValue(keras.metrics.Metric):
    """A metric that reports the last value it was given: how a training
    step logs a variable it read (alpha, a temperature), on every backend
    (under JAX the model's variables are not readable where Keras computes
    the metrics, the metrics' own are).

    Example:

    ```python
    alpha = kerasdistill.logs.LastValue(name="alpha")
    alpha.update_state(0.5)
    alpha.result()  # 0.5
    ```
    """

    def __init__(self, name, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(
            shape=(), initializer="zeros", name="value", aggregation="mean"
        )

    def update_state(self, value):
        self.value.assign(ops.cast(ops.stop_gradient(value), self.dtype))

    def result(self):
        # A new tensor, not the variable's buffer (which JAX's next step
        # donates).
        return ops.convert_to_tensor(self.value) + 0.0

    def reset_state(self):
        """Keeps the value: it is the variable's, not the epoch's."""


def temperature_trackers(distillation_losses):
    """`[(loss, tracker)]`: the `LastValue` metric that logs each loss's
    temperature, named as `temperature_names` says.

    Example:

    ```python
    kerasdistill.logs.temperature_trackers([kerasdistill.LogitsDistillation()])
    ```
    """
    return [
        (loss, LastValue(name=name))
        for loss, name in temperature_names(distillation_losses)
    ]


def select(results, own, labeled):
    """The logs of a step, out of all the metrics' `results`: each of the
    model's `own` keys (`{key: bool}`) where its flag is set; Keras's
    `loss`; the others (the compiled metrics) on a batch with labels.

    Example:

    ```python
    kerasdistill.logs.select({"loss": 1.0, "alpha": 0.5}, {"alpha": False}, True)
    # {"loss": 1.0}
    ```
    """
    return {
        key: value
        for key, value in results.items()
        if (own[key] if key in own else labeled or key == "loss")
    }


def results(metrics):
    """The results of `metrics` as `Model.get_metrics_result` gives them,
    leaving out those never built (an unbuilt `CompileMetrics` has no
    variables yet).

    Example:

    ```python
    kerasdistill.logs.results(distiller.metrics)  # {"loss": ..., ...}
    ```
    """
    logs = {}
    for metric in metrics:
        if not metric.variables:
            continue
        result = metric.result()
        logs.update(result if isinstance(result, dict) else {metric.name: result})
    return logs
