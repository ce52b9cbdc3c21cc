"""Which distillation losses the self-distillation models use: the one a
`SelfDistiller` built without one chooses from the model's compiled loss (a
cross-entropy gives `LogitsDistillation`, a mean squared / absolute error or
Huber loss gives `RegressionDistillation`), and the check that a loss of
`DeepSupervision` or `MutualLearning` compares outputs."""

import keras
import numpy as np
from keras import ops

from kerasdistill import losses as losses_module
from kerasdistill.losses import keras_compat

_CROSS_ENTROPIES = (
    keras.losses.SparseCategoricalCrossentropy,
    keras.losses.CategoricalCrossentropy,
)
_CROSS_ENTROPY_FUNCTIONS = (
    keras.losses.sparse_categorical_crossentropy,
    keras.losses.categorical_crossentropy,
)
_REGRESSION = (
    (keras.losses.MeanSquaredError, keras.losses.mean_squared_error, "mse"),
    (keras.losses.MeanAbsoluteError, keras.losses.mean_absolute_error, "mae"),
)


def distillation_loss_for(loss, progressive):
    """The distillation loss that `SelfDistiller(model)` (no
    `distillation_losses`) uses with the compiled `loss`."""
    fix = (
        "Pass distillation_losses to SelfDistiller, e.g. "
        "kerasdistill.LogitsDistillation(temperature=1.0) for classification "
        'or kerasdistill.RegressionDistillation("mse") for regression.'
    )
    if loss is None:
        raise ValueError(
            "Expected compile() to be given the model's loss: a SelfDistiller "
            "built without distillation_losses chooses its distillation loss "
            f'from it. Received: loss=None. Pass e.g. loss="mse" or '
            "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
            f", or: {fix}"
        )
    resolved = keras.losses.get(loss) if isinstance(loss, str) else loss
    if isinstance(resolved, _CROSS_ENTROPIES) or any(
        resolved is f for f in _CROSS_ENTROPY_FUNCTIONS
    ):
        from_logits = isinstance(resolved, _CROSS_ENTROPIES) and bool(
            resolved.get_config().get("from_logits", False)
        )
        return losses_module.LogitsDistillation(
            temperature=1.0,
            loss="soft_cross_entropy" if progressive else "kl_divergence",
            from_logits=from_logits,
        )
    for cls, function, name in _REGRESSION:
        if isinstance(resolved, cls) or resolved is function:
            return losses_module.RegressionDistillation(name)
    if isinstance(resolved, keras.losses.Huber):
        return losses_module.RegressionDistillation(
            "huber", delta=_huber_delta(resolved)
        )
    if resolved is keras.losses.huber:
        return losses_module.RegressionDistillation("huber")
    raise ValueError(
        "Expected compile()'s loss to be one a SelfDistiller can choose its "
        "distillation loss from: a categorical cross-entropy (sparse or "
        "not), mean squared error, mean absolute error or Huber. Received: "
        f"loss={loss!r}. {fix}"
    )


def _huber_delta(loss):
    """The `delta` of a `keras.losses.Huber`. Keras 3.15's `get_config()`
    leaves it out, so where it is missing it is measured: beyond `delta` the
    loss grows with slope `delta` (`delta * |e| - delta**2 / 2`)."""
    delta = loss.get_config().get("delta")
    if delta is not None:
        return float(delta)
    errors = (2.0**20, 2.0**21)
    values = [
        float(
            np.mean(
                ops.convert_to_numpy(
                    loss(np.zeros((1, 1), "float32"), np.full((1, 1), e, "float32"))
                )
            )
        )
        for e in errors
    ]
    return float(f"{(values[1] - values[0]) / (errors[1] - errors[0]):.6g}")


def description(loss):
    """The kind of a chosen loss: its class and configuration, without its
    name and its temperature (which a schedule may have changed)."""
    config = dict(loss.get_config())
    for key in ("name", "dtype", "trainable", "temperature"):
        config.pop(key, None)
    return f"{type(loss).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(config.items()))})"


def output_distillation_loss(loss, what):
    """`loss` as a distillation loss that compares final outputs (no layer
    taps), for `what` (the model that uses it, in the message).

    Example:

    ```python
    output_distillation_loss(kerasdistill.LogitsDistillation(), "MutualLearning")
    ```
    """
    loss = keras_compat.as_distillation_loss(loss)
    for role, layer_name in (
        ("teacher", loss.teacher_layer_name),
        ("student", loss.student_layer_name),
    ):
        if layer_name is not None:
            raise ValueError(
                f"{what} compares the networks' outputs, so its distillation "
                f"loss cannot tap a layer. Received {type(loss).__name__} "
                f"with {role}_layer_name={layer_name!r}. Use "
                "kerasdistill.LogitsDistillation or RegressionDistillation."
            )
    return loss
