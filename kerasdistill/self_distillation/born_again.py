"""Born-again networks: generation k+1, the same architecture, learns from
the labels and from generation k."""

import dataclasses

import keras

from kerasdistill import checks
from kerasdistill import distiller as distiller_module
from kerasdistill.losses import base as losses_base
from kerasdistill.losses import keras_compat

_MODES = ("auto", "min", "max")


@dataclasses.dataclass
class BornAgainResult:
    """Every generation of a `born_again` run.

    Attributes:
        models: The trained models, generation 0 (labels only) first.
        scores: Each model's validation score (`monitor`), same order.
        histories: Each generation's `History.history` dict.
        monitor: The name of the score.
        mode: `"min"` or `"max"`: which way the score improves.
        stopped_early: Whether the run stopped before `generations`, the
            score having stopped improving.

    Example:

    ```python
    result = kerasdistill.born_again(build, (x, y), (x_val, y_val),
                                     kerasdistill.LogitsDistillation(1.0))
    for model, score in zip(result.models, result.scores):
        print(model.name, score)
    result.best_model.save("best.keras")
    ```
    """

    models: list
    scores: list
    histories: list
    monitor: str
    mode: str
    stopped_early: bool

    @property
    def best_index(self):
        """The generation with the best score (the first, on ties)."""
        pick = min if self.mode == "min" else max
        return self.scores.index(pick(self.scores))

    @property
    def best_model(self):
        """The model of `best_index`."""
        return self.models[self.best_index]


def born_again(
    build_fn,
    data,
    validation_data,
    distillation_losses,
    generations=3,
    distillation_loss_weights=None,
    student_loss_weight=0.5,
    monitor="loss",
    mode="auto",
    patience=None,
    verbose=0,
    **fit_kwargs,
):
    """Trains born-again generations of one architecture (Furlanello et al.).

    Generation 0 is `build_fn()` trained on the labels (`model.fit`).
    Generation k+1 is a fresh `build_fn()` trained by a
    `kerasdistill.Distiller` whose teacher is generation k, compiled as
    `build_fn` compiled its model (a fresh optimizer). After each generation,
    the model alone is evaluated on `validation_data` (its own compiled loss
    and metrics, without the distillation term) and `monitor` is its score.
    With `patience`, the run stops once `patience` generations in a row have
    not improved on the best score: more rounds of self-distillation act as
    a stronger regularizer and eventually under-fit (Mobahi et al. 2020).

    Args:
        build_fn: A function of no argument returning a new, compiled
            `keras.Model` (same architecture every call; its compile
            arguments must be serializable).
        data: The training data: `(x, y)`, `(x, y, sample_weight)` or what
            `fit()` takes as `x` (a `tf.data.Dataset` of `(x, y)`...).
        validation_data: The same forms, scored after each generation.
        distillation_losses: A distillation loss or a list of them
            (e.g. `kerasdistill.LogitsDistillation(temperature=1.0)`,
            `kerasdistill.RegressionDistillation("mse")`); each generation
            gets a fresh copy (from its config).
        generations: The number of models to train, >= 1 (1 is plain
            training). Defaults to 3.
        distillation_loss_weights: One weight >= 0 per loss.
        student_loss_weight: `alpha` of generations >= 1, in [0, 1].
        monitor: A key of `model.evaluate(..., return_dict=True)`:
            `"loss"` (default) or a compiled metric's name.
        mode: `"min"`, `"max"` or `"auto"` (from the metric's direction;
            `"min"` for losses).
        patience: `None` (default) to train every generation, or an integer
            >= 1: stop after that many generations without improvement.
        verbose: Passed to `fit()`; 1 or 2 also prints each score.
        **fit_kwargs: Passed to every `fit()` (`epochs`, `batch_size`,
            `callbacks`, ...).

    Returns:
        A `kerasdistill.BornAgainResult`.

    Example:

    ```python
    def build():
        model = keras.Sequential([keras.Input((64,)),
                                  keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=["accuracy"])
        return model

    result = kerasdistill.born_again(
        build, (x, y), (x_val, y_val),
        kerasdistill.LogitsDistillation(temperature=1.0),
        generations=4, monitor="accuracy", patience=1, epochs=20,
    )
    result.scores, result.best_model
    ```

    Reference:
        Furlanello et al., "Born-Again Neural Networks", ICML 2018.
        https://arxiv.org/abs/1805.04770
        Mobahi, Farajtabar & Bartlett, "Self-Distillation Amplifies
        Regularization in Hilbert Space", NeurIPS 2020.
        https://arxiv.org/abs/2002.05715
    """
    if not callable(build_fn):
        raise TypeError(
            "Expected `build_fn` to be a function returning a new compiled "
            f"keras.Model. Received: build_fn={build_fn!r}. Pass the "
            "function itself, e.g. build_fn=make_model (not make_model())."
        )
    checks.check_positive_int(generations, "generations")
    checks.check_choice(mode, _MODES, "mode")
    if patience is not None:
        checks.check_positive_int(patience, "patience")
    checks.check_unit_interval(student_loss_weight, "student_loss_weight")
    losses = distillation_losses
    losses = list(losses) if isinstance(losses, (list, tuple)) else [losses]
    losses = [keras_compat.as_distillation_loss(loss) for loss in losses]
    for loss in losses:
        _copy_loss(loss)  # Fails now, not after generation 0, if it cannot.

    models, scores, histories = [], [], []
    stale = 0
    for generation in range(generations):
        model = _build(build_fn, generation)
        if generation == 0:
            history = _fit(model, data, verbose, fit_kwargs)
        else:
            distiller = distiller_module.Distiller(
                models[-1],
                model,
                [_copy_loss(loss) for loss in losses],
                distillation_loss_weights=distillation_loss_weights,
                student_loss_weight=student_loss_weight,
                name=f"born_again_{generation}",
            )
            distiller.compile_from_config(model.get_compile_config())
            history = _fit(distiller, data, verbose, fit_kwargs)
        score = _score(model, validation_data, monitor)
        if generation == 0:
            mode = _resolve_mode(model, monitor, mode)
        improved = not scores or (
            score < min(scores) if mode == "min" else score > max(scores)
        )
        models.append(model)
        scores.append(score)
        histories.append(history.history)
        if verbose:
            print(f"born_again: generation {generation} {monitor}={score:.6g}")
        stale = 0 if improved else stale + 1
        if patience is not None and stale >= patience and generation + 1 < generations:
            return BornAgainResult(models, scores, histories, monitor, mode, True)
    return BornAgainResult(models, scores, histories, monitor, mode, False)


def _build(build_fn, generation):
    model = build_fn()
    checks.check_model(model, "model returned by build_fn")
    if not model.compiled:
        raise ValueError(
            "Expected build_fn to return a compiled model (its loss and "
            "metrics score every generation and configure the distillation). "
            f"Received the uncompiled model '{model.name}' at generation "
            f"{generation}. Call model.compile(optimizer, loss, metrics) "
            "inside build_fn."
        )
    return model


def _fit(model, data, verbose, fit_kwargs):
    x, y, sample_weight = _unpack(data)
    return model.fit(x, y, sample_weight=sample_weight, verbose=verbose, **fit_kwargs)


def _score(model, validation_data, monitor):
    x, y, sample_weight = _unpack(validation_data)
    logs = model.evaluate(
        x, y, sample_weight=sample_weight, verbose=0, return_dict=True
    )
    if monitor not in logs:
        raise ValueError(
            f"Expected `monitor` to be one of the model's evaluation keys "
            f"{sorted(logs)}. Received: monitor={monitor!r}. Pass one of "
            "those keys (the model alone is evaluated, so there is no "
            "`val_` prefix and no distillation term)."
        )
    return float(logs[monitor])


def _unpack(data):
    if isinstance(data, tuple) and len(data) in (2, 3):
        return data if len(data) == 3 else (*data, None)
    if isinstance(data, list):
        raise TypeError(
            "Expected the data as a tuple (x, y) or (x, y, sample_weight), "
            "or a dataset. Received a list; pass a tuple."
        )
    return data, None, None


def _resolve_mode(model, monitor, mode):
    if mode != "auto":
        return mode
    if monitor == "loss" or monitor.endswith("_loss"):
        return "min"
    for metric in _flat_metrics(model):
        if metric.name == monitor:
            if isinstance(metric, _HIGHER_IS_BETTER):
                return "max"
            if isinstance(metric, _LOWER_IS_BETTER):
                return "min"
    raise ValueError(
        f'Expected mode="min" or mode="max" for monitor={monitor!r}: '
        'mode="auto" knows the direction of losses and of Keras\'s '
        'built-in metrics only. Received mode="auto". Pass mode="min" '
        '(lower is better) or mode="max" (higher is better).'
    )


def _metric_classes(*names):
    """The `keras.metrics` classes of these names that this Keras has."""
    return tuple(
        getattr(keras.metrics, name)
        for name in names
        if isinstance(getattr(keras.metrics, name, None), type)
    )


# Which way Keras's built-in metrics improve, from the public classes (Keras
# records it only in a private attribute).
_HIGHER_IS_BETTER = _metric_classes(
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "AUC",
    "Precision",
    "Recall",
    "PrecisionAtRecall",
    "RecallAtPrecision",
    "SensitivityAtSpecificity",
    "SpecificityAtSensitivity",
    "TruePositives",
    "TrueNegatives",
    "F1Score",
    "FBetaScore",
    "R2Score",
    "IoU",
    "MeanIoU",
    "BinaryIoU",
    "OneHotIoU",
    "OneHotMeanIoU",
    "CosineSimilarity",
    "PearsonCorrelation",
    "ConcordanceCorrelation",
)
_LOWER_IS_BETTER = _metric_classes(
    "MeanSquaredError",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError",
    "RootMeanSquaredError",
    "LogCoshError",
    "Hinge",
    "SquaredHinge",
    "CategoricalHinge",
    "KLDivergence",
    "Poisson",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "FalsePositives",
    "FalseNegatives",
)


def _flat_metrics(model):
    metrics = []
    for metric in model.metrics:
        metrics.extend(getattr(metric, "metrics", None) or [metric])
    return metrics


def _copy_loss(loss):
    """Each generation gets a fresh loss (its own adapter, its own state)."""
    return losses_base.copy_loss(
        loss,
        fix="Pass losses of kerasdistill (e.g. kerasdistill."
        "LogitsDistillation()), or register yours as serializable.",
    )
