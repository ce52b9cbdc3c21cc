"""Ready-made schedules for the recipes users ask for most, each returned
as a configured callback to pass to `Distiller.fit(callbacks=[...])`."""

from kerasdistill import checks
from kerasdistill.schedules import callbacks
from kerasdistill.schedules import curves


def progressive_temperature(start=10.0, factor=0.5, floor=1.0, loss=None, verbose=0):
    """Temperature `start`, multiplied by `factor` each epoch, down to `floor`.

    The defaults give T = 10, 5, 2.5, 1.25, 1, 1, ...: very soft targets
    first (the teacher's dark knowledge, the relations between classes),
    sharper ones later. `factor=1.0` keeps `start` throughout.

    Args:
        start: The temperature of the first epoch, >= `floor`.
        factor: The factor per epoch, in (0, 1].
        floor: The lowest temperature, > 0.
        loss: Index or name of the loss whose temperature to set; defaults
            to the only loss with a temperature.
        verbose: 0 or 1.

    Returns:
        A `kerasdistill.callbacks.TemperatureScheduler`.

    Example:

    ```python
    distiller.fit(
        x, y, epochs=10,
        callbacks=[kerasdistill.recipes.progressive_temperature()],
    )
    ```
    """
    checks.check_positive(start, "start")
    checks.check_positive(floor, "floor")
    checks.check_positive(factor, "factor")
    if factor > 1:
        raise ValueError(
            f"Expected factor in (0, 1] so that the temperature falls. "
            f"Received: factor={factor}"
        )
    if start < floor:
        raise ValueError(
            f"Expected start >= floor: the temperature falls from `start` to "
            f"`floor`. Received: start={start}, floor={floor}. Pass a lower "
            "floor or a higher start."
        )
    return callbacks.TemperatureScheduler(
        curves.ExponentialDecay(start, factor, end=floor),
        loss=loss,
        verbose=verbose,
    )


def alpha_ramp(epochs, start=0.9, end=0.3, verbose=0):
    """`alpha` moves linearly from `start` at the first epoch to `end` at
    the last.

    `alpha` weighs the labels: the default 0.9 -> 0.3 learns from the labels
    first and from the teacher later; `alpha_ramp(epochs, 0.3, 0.9)` does the
    reverse (imitate the teacher first, then fit the labels).

    Args:
        epochs: Number of epochs of the run (the value reaches `end` at
            epoch index `epochs - 1`).
        start: alpha of the first epoch, in [0, 1].
        end: alpha of the last epoch, in [0, 1].
        verbose: 0 or 1.

    Returns:
        A `kerasdistill.callbacks.AlphaScheduler`.

    Example:

    ```python
    distiller.fit(
        x, y, epochs=20, callbacks=[kerasdistill.recipes.alpha_ramp(20)]
    )
    ```
    """
    checks.check_positive_int(epochs, "epochs")
    checks.check_unit_interval(start, "start")
    checks.check_unit_interval(end, "end")
    return callbacks.AlphaScheduler(
        curves.Linear(start, end, steps=max(epochs - 1, 1)),
        verbose=verbose,
    )


def dkd_warmup(warmup_epochs=20, weight=1.0, loss=0, verbose=0):
    """DKD's warm-up: the distillation weight is `weight * min(e / W, 1)` in
    the `e`-th epoch (1-based), `W = warmup_epochs`.

    Decoupled Knowledge Distillation ramps its loss up linearly over the
    first 20 epochs (`min(epoch / warmup, 1.0)` in the authors' code, where
    epochs count from 1), so that the student does not chase the teacher
    before it has learned anything from the labels. With Keras's 0-based
    epoch index `i` the weight is `weight * min((i + 1) / W, 1)`.

    Args:
        warmup_epochs: `W`, an integer >= 1.
        weight: The weight after the warm-up, >= 0.
        loss: Index or name of the distillation loss. Defaults to 0.
        verbose: 0 or 1.

    Returns:
        A `kerasdistill.callbacks.LossWeightScheduler`.

    Example:

    ```python
    distiller.fit(
        x, y, epochs=100, callbacks=[kerasdistill.recipes.dkd_warmup(20)]
    )
    ```

    Reference:
        Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022
        (https://arxiv.org/abs/2203.08679); warm-up as in the official code,
        megvii-research/mdistiller, `mdistiller/distillers/DKD.py`.
    """
    checks.check_positive_int(warmup_epochs, "warmup_epochs")
    checks.check_non_negative(weight, "weight")
    return callbacks.LossWeightScheduler(
        curves.WarmupHold(weight, warmup_epochs - 1, start=weight / warmup_epochs),
        loss=loss,
        verbose=verbose,
    )


def curriculum_temperature(ramp_epochs=10, max_strength=1.0, verbose=0):
    """CTKD's curriculum: the gradient-reversal strength `lambda` of a
    `kerasdistill.CTKD` loss rises from 0 to `max_strength` along half a
    cosine over the first `ramp_epochs` epochs, then holds.

    `lambda_e = max_strength * (1 - cos(pi * e / E)) / 2` at epoch index
    `e < E`: the learned temperature first barely opposes the student
    (easy), then maximizes the distillation loss ever more (hard).

    Args:
        ramp_epochs: `E`, an integer >= 1. Defaults to 10 (the paper's
            code).
        max_strength: `lambda` after the ramp, >= 0. Defaults to 1.0.
        verbose: 0 or 1.

    Returns:
        A `kerasdistill.callbacks.GradientReversalScheduler`.

    Example:

    ```python
    distiller = kerasdistill.Distiller(teacher, student, kerasdistill.CTKD())
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    distiller.fit(
        x, y, epochs=40,
        callbacks=[kerasdistill.recipes.curriculum_temperature(10)],
    )
    ```

    Reference:
        Li et al., "Curriculum Temperature for Knowledge Distillation",
        AAAI 2023 (eq. 11). https://arxiv.org/abs/2211.16231
    """
    checks.check_positive_int(ramp_epochs, "ramp_epochs")
    checks.check_non_negative(max_strength, "max_strength")
    return callbacks.GradientReversalScheduler(
        curves.Cosine(0.0, max_strength, steps=ramp_epochs), verbose=verbose
    )
