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
from keras import ops

from kerasdistill import reduction

# `keras.distillation`'s name for `loss`, logged as a copy of it.
TOTAL_LOSS = "total_loss"


@keras.saving.register_keras_serializable(package="kerasdistill")
class LossMean(keras.metrics.Metric):
    """The weighted mean of the loss values of an epoch's batches, one
    scalar per batch: what `keras.metrics.Mean` computes for them, with the
    few operations a scalar needs (every step of an eager PyTorch loop
    pays for each one).

    Example:

    ```python
    tracker = kerasdistill.logs.LossMean(name="student_loss")
    tracker.update_state(0.5, 32)
    tracker.result()  # 0.5
    ```
    """

    def __init__(self, name, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, value, weight):
        weight = ops.cast(weight, self.dtype)
        self.total.assign_add(ops.cast(value, self.dtype) * weight)
        self.count.assign_add(weight)

    def result(self):
        return ops.divide_no_nan(self.total, self.count)


def track(tracker, value, weight):
    """Records a loss (scaled for the replicas, as returned by a replica's
    `compute_loss`) in a `LossMean` tracker, with `weight` (Keras weighs its
    loss tracker by the batch size).

    Example:

    ```python
    tracker = kerasdistill.logs.LossMean(name="student_loss")
    kerasdistill.logs.track(tracker, keras.ops.array(0.5), 32)
    ```
    """
    tracker.update_state(reduction.unscale_for_replicas(value), weight)


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


def term_trackers(distillation_losses):
    """One `LossMean` tracker per distillation loss, named
    `<loss name>_loss` after `loss_names`, when there are several (with one,
    it would repeat `distillation_loss`).

    Example:

    ```python
    trackers = kerasdistill.logs.term_trackers(distiller.distillation_losses)
    ```
    """
    if len(distillation_losses) < 2:
        return []
    return [LossMean(name=f"{name}_loss") for name in loss_names(distillation_losses)]


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


def select(metrics, own, labeled):
    """The metrics a step updated: each of `own` (`{tracker: bool}`, the
    model's own trackers) where its flag is set; Keras's `loss` tracker;
    the others (the compiled metrics) on a batch with labels.

    Example:

    ```python
    kerasdistill.logs.select(model.metrics, {model.alpha_tracker: False}, True)
    ```
    """
    chosen = {id(tracker) for tracker, flag in own.items() if flag}
    owned = {id(tracker) for tracker in own}
    return [
        metric
        for metric in metrics
        if id(metric) in chosen
        or (id(metric) not in owned and (labeled or metric.name == "loss"))
    ]


def results(metrics, computed=None):
    """The results of `metrics` as `Model.get_metrics_result` gives them,
    leaving out those never built (an unbuilt `CompileMetrics` has no
    variables yet); taken from `computed` (a dict of results) where it
    holds them.

    Example:

    ```python
    kerasdistill.logs.results(distiller.metrics)  # {"loss": ..., ...}
    ```
    """
    logs = {}
    for metric in metrics:
        if not metric.variables:
            continue
        if computed is not None and metric.name in computed:
            logs[metric.name] = computed[metric.name]
            continue
        result = metric.result()
        logs.update(result if isinstance(result, dict) else {metric.name: result})
    return logs
