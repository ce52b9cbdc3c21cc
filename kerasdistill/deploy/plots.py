"""The plots of the distillation report, and the reading of a History.

Each plot function returns a `matplotlib.figure.Figure` drawn on an Agg
canvas (no window, pyplot's global state untouched); `save()` writes it as
a PNG. matplotlib is imported when the first figure is made.
"""

import numpy as np

_COLORS = {"teacher": "#1f77b4", "baseline": "#7f7f7f", "student": "#d62728"}
_LOSSES = {"loss": "#7f7f7f", "student_loss": "#2ca02c", "distillation_loss": "#9467bd"}
# Logged beside `loss` with the same value (the keras.distillation dialect):
# a loss, drawn only where it differs from `loss`.
_TOTAL_LOSS = "total_loss"
_SCHEDULE_COLORS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_METRIC_COLORS = ("#1f77b4", "#d62728", "#bcbd22", "#17becf")
_DPI = 100


def history_dict(history):
    """Returns `{key: [float, ...]}` from a `keras.callbacks.History` or
    its `.history` dict, checking that it holds at least one epoch."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise TypeError(
            "Expected `history` to be the keras.callbacks.History returned by "
            "fit() or its `.history` dict. Received: "
            f"{type(history).__name__}"
        )
    try:
        logs = {str(k): [float(v) for v in values] for k, values in logs.items()}
    except (TypeError, ValueError) as error:
        raise TypeError(
            "Expected `history` to map each logged name to a list of numbers, "
            f"one per epoch. Received: {history!r}"
        ) from error
    if not logs or not any(logs.values()):
        raise ValueError(
            "Expected a history with at least one epoch. Received an empty "
            "one: pass the History returned by a fit() that ran."
        )
    return logs


def training_summary(history):
    """Epochs, scheduled values (first and last), constant schedulable
    values and the last logged value of every key."""
    schedulable = {k: v for k, v in history.items() if _is_schedulable(k)}
    return {
        "epochs": _epoch_count(history),
        "scheduled": {k: [v[0], v[-1]] for k, v in schedulable.items() if _varies(v)},
        "constant": {k: v[0] for k, v in schedulable.items() if v and not _varies(v)},
        "final": {k: v[-1] for k, v in history.items() if v},
    }


def describe_training(summary):
    """One line describing a `training_summary()`."""
    parts = [f"Training: {summary['epochs']} epochs"]
    parts += [
        f"{k} {a:.3g} -> {b:.3g} (scheduled)"
        for k, (a, b) in summary["scheduled"].items()
    ]
    parts += [f"{k} {v:.3g} (constant)" for k, v in summary["constant"].items()]
    final = {k: v for k, v in summary["final"].items() if k.startswith("val_")}
    if final:
        parts.append(
            "last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items())
        )
    return "; ".join(parts) + "."


def quality_vs_size(figures):
    """The headline metric of each model against its parameter count."""
    metric = figures["metric"]
    figure = _figure(6.4, 4.2)
    axes = figure.add_subplot()
    for name, values in figures["models"].items():
        axes.scatter(
            values["params"],
            values[metric],
            s=70,
            color=_COLORS[name],
            zorder=3,
            label=f"{name}: {values['params']:,} params, "
            f"{values['size_bytes'] / 1024:.1f} KB, {values['latency_ms']:.2f} ms",
        )
    axes.set_xscale("log")
    axes.margins(x=0.3, y=0.3)
    axes.set_xlabel("parameters (log scale)")
    better = "higher" if metric == "accuracy" else "lower"
    title = {"accuracy": "Accuracy", "rmse": "RMSE"}[metric]
    axes.set_ylabel(f"{title} ({better} is better)")
    axes.set_title(f"{title} against model size ({figures['samples']} samples)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure


def confidence(confidences):
    """Histograms of each model's top-class probability."""
    figure = _figure(6.4, 4.2)
    axes = figure.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    for name, values in confidences.items():
        axes.hist(
            values,
            bins=bins,
            weights=np.full(len(values), 1.0 / len(values)),
            histtype="step",
            linewidth=2,
            color=_COLORS[name],
            label=f"{name} (mean {np.mean(values):.2f})",
        )
    axes.set_xlabel("confidence (top-class probability)")
    axes.set_ylabel("fraction of samples")
    axes.set_title("Confidence distributions")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def errors(residuals):
    """Histograms of each model's prediction errors (prediction - label)."""
    figure = _figure(6.4, 4.2)
    axes = figure.add_subplot()
    low = min(float(np.min(v)) for v in residuals.values())
    high = max(float(np.max(v)) for v in residuals.values())
    bins = np.linspace(low, high if high > low else low + 1.0, 31)
    for name, values in residuals.items():
        axes.hist(
            values,
            bins=bins,
            weights=np.full(len(values), 1.0 / len(values)),
            histtype="step",
            linewidth=2,
            color=_COLORS[name],
            label=f"{name} (RMSE {np.sqrt(np.mean(np.square(values))):.3g})",
        )
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("prediction error (prediction - label)")
    axes.set_ylabel("fraction of predictions")
    axes.set_title("Error distributions")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def training_curves(history):
    """Losses (with scheduled alpha / temperatures on extra y axes) and
    metrics per epoch; validation values dashed for losses, solid for
    metrics (training metrics thin and dashed)."""
    epochs = _epoch_count(history)
    metrics = list(
        dict.fromkeys(
            _base(k) for k in history if not _is_loss(k) and not _is_hyperparameter(k)
        )
    )
    scheduled = [k for k, v in history.items() if _is_schedulable(k) and _varies(v)]
    figure = _figure(6.4 + 5.0 * bool(metrics) + 0.9 * len(scheduled), 4.2)
    axes = figure.add_subplot(1, 1 + bool(metrics), 1)
    handles = []
    for base, color in _LOSSES.items():
        for key, style in ((base, "-"), ("val_" + base, "--")):
            if history.get(key):
                handles += axes.plot(
                    _x(history[key], epochs),
                    history[key],
                    style,
                    color=color,
                    label=key,
                )
    for key, style in ((_TOTAL_LOSS, "-."), ("val_" + _TOTAL_LOSS, ":")):
        if history.get(key) and not _repeats(history, key):
            handles += axes.plot(
                _x(history[key], epochs),
                history[key],
                style,
                color="black",
                label=key,
            )
    for i, key in enumerate(scheduled):
        twin = axes.twinx()
        twin.spines["right"].set_position(("axes", 1.0 + 0.18 * i))
        color = _SCHEDULE_COLORS[i % len(_SCHEDULE_COLORS)]
        handles += twin.plot(
            _x(history[key], epochs),
            history[key],
            ":",
            color=color,
            linewidth=2,
            label=f"{key} (right axis)",
        )
        twin.set_ylabel(key, color=color)
    losses = [
        value for key, values in history.items() if _is_loss(key) for value in values
    ]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 100:
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title("Losses" + (" and schedules" if scheduled else ""))
    axes.grid(alpha=0.3)
    axes.legend(handles=handles, loc="upper right", fontsize=7)
    if metrics:
        metric_axes = figure.add_subplot(1, 2, 2)
        for i, base in enumerate(metrics):
            color = _METRIC_COLORS[i % len(_METRIC_COLORS)]
            for key, style, width in ((base, "--", 1.0), ("val_" + base, "-", 2.0)):
                if history.get(key):
                    metric_axes.plot(
                        _x(history[key], epochs),
                        history[key],
                        style,
                        color=color,
                        linewidth=width,
                        label=key,
                    )
        metric_axes.set_xlabel("epoch")
        metric_axes.set_title("Metrics")
        metric_axes.grid(alpha=0.3)
        metric_axes.legend(loc="best", fontsize=7)
    figure.tight_layout()
    return figure


def save(figure, file):
    """Writes `figure` to `file` as a PNG and returns `file`."""
    figure.savefig(file, dpi=_DPI, format="png")
    return file


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _base(key):
    return key[4:] if key.startswith("val_") else key


def _is_loss(key):
    return _base(key) in _LOSSES or _base(key) == _TOTAL_LOSS


def _is_schedulable(key):
    """A value a schedule may change, as logged for training (its `val_`
    copy, logged by evaluate(), repeats it)."""
    return key in ("alpha", "temperature") or (
        key.endswith("_temperature") and not key.startswith("val_")
    )


def _is_hyperparameter(key):
    base = _base(key)
    return _is_schedulable(base) or base in ("learning_rate", "lr")


def _varies(values):
    return bool(values) and max(values) - min(values) > 1e-6 * max(
        1.0, max(map(abs, values))
    )


def _repeats(history, key):
    """Whether `total_loss` (or `val_total_loss`) repeats `loss`."""
    same = history.get(key.replace(_TOTAL_LOSS, "loss"))
    return (
        same is not None
        and len(same) == len(history[key])
        and bool(np.allclose(same, history[key], rtol=1e-6, atol=1e-12))
    )


def _epoch_count(history):
    return max(len(v) for v in history.values())


def _x(values, epochs):
    """Epoch numbers (from 1) of a key's values; a key logged less often
    (validation_freq > 1) is spread evenly up to the last epoch."""
    return np.linspace(epochs / len(values), epochs, len(values))
