"""The distillation report: did the distillation pay off?

`report()` measures the teacher, the distilled student and an optional
label-only baseline on the same data (quality, agreement with the teacher,
parameters, size on disk, inference latency), returns the figures as a dict
and, given a folder, writes a Markdown summary with PNG plots.
`format_report()` renders the figures as a plain-text table for a console.

It runs on every Keras backend. Arrays are batched here, without
TensorFlow; a `tf.data.Dataset` is read as numpy batches (TensorFlow is
imported by whoever built it, never by this module).
"""

import os
import sys
import tempfile
import time
import warnings

import keras
import numpy as np
from keras import tree

from kerasdistill import checks
from kerasdistill import model_configs
from kerasdistill.deploy import plots

TASKS = ("classification", "regression")
_ORDER = ("teacher", "baseline", "student")
_WARMUP_RUNS = 2


def report(
    teacher,
    student,
    data,
    baseline=None,
    history=None,
    path=None,
    task=None,
    batch_size=None,
    latency_runs=10,
):
    """Measures teacher, student and baseline and reports the figures.

    For each model it measures, on `data`:
    - classification: `accuracy`, `mean_confidence` (the mean top-class
      probability) and, for the student and the baseline, `agreement`: the
      fraction of samples where they predict the teacher's class;
    - regression: `mae`, `rmse` (over all outputs) and, for the student and
      the baseline, `rmse_to_teacher`;
    - `params` (`model.count_params()`), `size_bytes` (the model saved to a
      `.keras` file without optimizer state; `size_format` is `"keras"`, or
      `"npz"` with a warning when the model cannot be saved as `.keras` and
      its weights alone are measured) and `latency_ms`: the median of
      `latency_runs` timed `predict_on_batch` calls on the first batch of
      `data`, on this machine, after warm-up calls.

    The task is `task` when given. Otherwise it is classification when the
    models have more than one output unit and the labels are either class
    indices (integer values, one per sample, of shape `(n,)` or `(n, 1)`)
    or one-hot rows of the outputs' shape; it is regression in every other
    case, so a single-output model is regression unless
    `task="classification"` (binary: its output is a probability when the
    model ends with a sigmoid, a logit otherwise). Class outputs are read as
    probabilities when every row is non-negative and sums to 1 (a model
    ending with a softmax), else as logits.

    Given `path`, the folder is created and receives `report.md` and the
    PNG plots: quality against parameter count, the teacher's, baseline's
    and student's confidence distributions (prediction errors for
    regression), and, with `history`, the training curves: student loss,
    distillation loss, metrics, and `alpha` / temperature on a second axis
    when they were scheduled (their logged values vary). The plots use
    matplotlib's Agg canvas; no window opens and pyplot's state is untouched.

    Args:
        teacher: The teacher `keras.Model`.
        student: The distilled student `keras.Model` (e.g.
            `distiller.student`).
        data: Held-out data: an `(x, y)` tuple of arrays (numpy, or tensors
            of the backend), or a finite `tf.data.Dataset` of `(x, y)`
            batches (on any backend).
        baseline: Optional `keras.Model` trained on the labels alone,
            usually the student's architecture.
        history: Optional `keras.callbacks.History` returned by
            `Distiller.fit()`, or its `.history` dict.
        path: Optional folder to write `report.md` and the PNG plots to.
        task: `"classification"`, `"regression"` or `None` to infer it.
        batch_size: Batch size for `(x, y)` arrays. Defaults to 32. Not
            accepted with a dataset, which is already batched.
        latency_runs: Number of timed calls whose median is the latency.

    Returns:
        A dict: `task`, `samples`, `latency_batch_size`, `metric` (the
        headline metric, `"accuracy"` or `"rmse"`), `models` (one dict of
        figures per model name), `student_vs_teacher` (`param_ratio`,
        `size_ratio`, `speedup`: teacher over student; `metric_delta`:
        student minus teacher), `student_vs_baseline` (`metric_delta`) with
        a baseline, `training` (`epochs`, `scheduled`, `final` logged
        values) with a history, and `files` (paths written) with a path.

    Example:

    ```python
    figures = kerasdistill.report(
        teacher, distiller.student, (x_test, y_test),
        baseline=baseline, history=history, path="distillation-report",
    )
    print(kerasdistill.format_report(figures))
    ```
    """
    models = {"teacher": teacher, "baseline": baseline, "student": student}
    models = {name: model for name, model in models.items() if model is not None}
    for name, model in models.items():
        checks.check_model(model, name)
    if task is not None:
        checks.check_choice(task, TASKS, "task")
    checks.check_positive_int(latency_runs, "latency_runs")
    history = None if history is None else plots.history_dict(history)

    batches = _as_batches(data, batch_size, teacher)
    outputs, y, first_batch = _predict(models, batches)
    task = task or _infer_task(y, outputs["teacher"])
    if task == "classification":
        figures, arrays = _classification(models, outputs, y)
    else:
        figures, arrays = _regression(outputs, y)
    for name, model in models.items():
        figures[name]["params"] = int(model.count_params())
        size, file_format = _size_on_disk(model, name)
        figures[name]["size_bytes"] = size
        figures[name]["size_format"] = file_format
        figures[name]["latency_ms"] = _latency_ms(model, first_batch, latency_runs)

    metric = "accuracy" if task == "classification" else "rmse"
    result = {
        "task": task,
        "samples": int(len(y)),
        "latency_batch_size": int(len(tree.flatten(first_batch)[0])),
        "metric": metric,
        "models": {name: figures[name] for name in _ORDER if name in figures},
        "student_vs_teacher": _student_vs_teacher(figures, metric),
    }
    if baseline is not None:
        result["student_vs_baseline"] = {
            "metric_delta": figures["student"][metric] - figures["baseline"][metric]
        }
    if history is not None:
        result["training"] = plots.training_summary(history)
    if path is not None:
        result["files"] = _write(result, arrays, history, path)
    return result


def format_report(figures):
    """Renders the dict returned by `report()` as a plain-text table.

    Args:
        figures: The dict returned by `kerasdistill.report`.

    Returns:
        A multi-line string: a title, one row per model and a summary.

    Example:

    ```python
    print(kerasdistill.format_report(kerasdistill.report(teacher, student, (x, y))))
    ```
    """
    header, rows = _table(figures)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = [_title(figures)]
    for row in [header] + rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    lines += _summary(figures)
    return "\n".join(lines)


def _infer_task(y, outputs):
    """Classification when the outputs have more than one unit and the
    labels are class indices (integer values, one per prediction) or one-hot
    rows of the outputs' shape; regression otherwise."""
    y = np.asarray(y)
    units = outputs.shape[-1] if outputs.ndim > 1 else 1
    if units < 2 or not np.issubdtype(y.dtype, np.number):
        return "regression"
    integral = bool(np.all(np.mod(y, 1) == 0))
    if integral and y.size * units == outputs.size:
        return "classification"
    one_hot = (
        y.shape == outputs.shape
        and integral
        and bool(np.all((y == 0) | (y == 1)))
        and bool(np.all(y.sum(axis=-1) == 1))
    )
    return "classification" if one_hot else "regression"


def _latency_ms(model, x, runs):
    """Median time of `runs` `model.predict_on_batch(x)` calls, in ms, after
    warm-up calls that trace the predict function."""
    for _ in range(_WARMUP_RUNS):
        model.predict_on_batch(x)
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict_on_batch(x)
        durations.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(durations))


def _tf_dataset_type():
    """`tf.data.Dataset` when TensorFlow is already imported (a dataset can
    only come from it), else `None`: TensorFlow is not imported for this."""
    tf = sys.modules.get("tensorflow")
    return getattr(getattr(tf, "data", None), "Dataset", None)


def _as_batches(data, batch_size, model):
    """An iterable of `(x, y)` numpy batches of `data`."""
    dataset_type = _tf_dataset_type()
    if dataset_type is not None and isinstance(data, dataset_type):
        if batch_size is not None:
            raise ValueError(
                "Expected batch_size=None with a tf.data.Dataset, which is "
                f"already batched. Received: batch_size={batch_size}. Batch "
                "the dataset with `.batch(n)` and leave batch_size=None."
            )
        return _check_dataset(data, model).as_numpy_iterator()
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            "Expected `data` to be an (x, y) tuple of arrays or a "
            "tf.data.Dataset of (x, y) batches. Received: "
            f"{type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
            + ". Sample weights are not used by the report."
        )
    x, y = _as_inputs(data[0]), _as_array(data[1])
    batch_size = 32 if batch_size is None else batch_size
    checks.check_positive_int(batch_size, "batch_size")
    x_count, y_count = len(tree.flatten(x)[0]), len(y)
    if x_count != y_count or y_count == 0:
        raise ValueError(
            "Expected x and y to hold the same number (> 0) of samples. "
            f"Received: {x_count} inputs and {y_count} labels."
        )
    return [
        tree.map_structure(
            lambda array, start=start: array[start : start + batch_size], (x, y)
        )
        for start in range(0, y_count, batch_size)
    ]


def _as_inputs(x):
    """Numpy arrays in the structure of `x`: one array, or a dict / list of
    one per input of a multi-input model."""
    if isinstance(x, dict):
        return {key: _as_array(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)) and x and all(hasattr(e, "shape") for e in x):
        return type(x)(_as_array(value) for value in x)
    return _as_array(x)


def _as_array(value):
    if keras.ops.is_tensor(value):
        return keras.ops.convert_to_numpy(value)
    return np.asarray(value)


def _check_dataset(dataset, model):
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            "Expected a dataset of (x, y) batches. Received elements "
            f"{spec}. Map it to (x, y) pairs; sample weights are not used "
            "by the report."
        )
    infinite = sys.modules["tensorflow"].data.INFINITE_CARDINALITY
    if dataset.cardinality() == infinite:
        raise ValueError(
            "Expected a finite dataset. Received one that repeats forever. Pass it "
            "without `.repeat()` or take a part of it with `.take(n)`."
        )
    inputs = checks.symbolic_inputs(model) or []
    x_spec = tree.flatten(spec[0])
    if inputs and len(inputs) == len(x_spec):
        for tensor, element in zip(inputs, x_spec):
            if len(element.shape) == len(tensor.shape) - 1:
                raise ValueError(
                    "Expected a dataset of batches of the model's input shape "
                    f"{tuple(tensor.shape)}. Received inputs of shape "
                    f"{tuple(element.shape)}: it looks unbatched. Call "
                    "`.batch(n)` on it."
                )
    return dataset


def _predict(models, batches):
    outputs = {name: [] for name in models}
    labels, first_batch = [], None
    for x, y in batches:
        first_batch = x if first_batch is None else first_batch
        labels.append(np.asarray(y))
        for name, model in models.items():
            prediction = model.predict_on_batch(x)
            if tree.is_nested(prediction):
                raise ValueError(
                    "Expected single-output models. Received: the "
                    f"{name} returns {len(tree.flatten(prediction))} outputs. "
                    "Report on a model that returns the output to compare, "
                    "e.g. keras.Model(model.inputs, model.outputs[0])."
                )
            outputs[name].append(np.asarray(prediction))
    if first_batch is None:
        raise ValueError(
            "Expected data with at least one sample. Received an empty dataset."
        )
    outputs = {name: np.concatenate(values) for name, values in outputs.items()}
    return outputs, np.concatenate(labels), first_batch


def _classification(models, outputs, y):
    teacher = outputs["teacher"]
    units = teacher.shape[-1] if teacher.ndim > 1 else 1
    labels = _class_labels(y, teacher, units)
    figures, confidences = {}, {}
    for name, output in outputs.items():
        probabilities = _probabilities(output, models[name], units)
        predicted = np.argmax(probabilities, axis=-1)
        confidences[name] = np.max(probabilities, axis=-1)
        figures[name] = {
            "accuracy": float(np.mean(predicted == labels)),
            "mean_confidence": float(np.mean(confidences[name])),
        }
        if name == "teacher":
            teacher_classes = predicted
        else:
            figures[name]["agreement"] = float(np.mean(predicted == teacher_classes))
    return figures, {"confidence": confidences}


def _class_labels(y, outputs, units):
    classes = max(units, 2)
    if units > 1 and y.shape == outputs.shape:
        return np.argmax(y, axis=-1).reshape(-1)
    if y.size * units != outputs.size or not np.all(np.mod(y, 1) == 0):
        raise ValueError(
            "Expected classification labels to be class indices (one integer "
            "per prediction) or one-hot rows of the outputs' shape. Received "
            f"labels of shape {y.shape} and dtype {y.dtype} for outputs of "
            f"shape {outputs.shape}. Pass task='regression' if the models "
            "predict continuous values."
        )
    labels = y.reshape(-1).astype("int64")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"Expected class indices in [0, {classes - 1}] for outputs with "
            f"{units} unit(s). Received labels in [{labels.min()}, "
            f"{labels.max()}]."
        )
    return labels


def _probabilities(outputs, model, units):
    """Rows of class probabilities, shape `(predictions, max(units, 2))`."""
    outputs = outputs.reshape(-1, units).astype("float64")
    if units == 1:
        if not _ends_with_sigmoid(model, outputs):
            outputs = 1.0 / (1.0 + np.exp(-outputs))
        return np.concatenate([1.0 - outputs, outputs], axis=-1)
    if np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _ends_with_sigmoid(model, outputs):
    """Whether the layer that produces the model's output applies a
    sigmoid; without a symbolic graph (a subclassed model), or when that
    layer is not found, whether the outputs lie in [0, 1]."""
    layer = _output_layer(model)
    if layer is None:
        return bool(np.all((outputs >= 0) & (outputs <= 1)))
    return getattr(layer, "activation", None) is keras.activations.sigmoid


def _output_layer(model):
    """The layer whose (first) output is the model's output, found through
    public attributes: `model.outputs` and each layer's `output`."""
    symbolic = checks.symbolic_outputs(model)
    if symbolic is None:
        return None
    for layer in reversed(model.layers):
        try:
            output = layer.output
        except (AttributeError, ValueError):
            continue
        if output is symbolic[0]:
            return layer
    return None


def _regression(outputs, y):
    teacher = outputs["teacher"].reshape(-1)
    if y.size != teacher.size:
        raise ValueError(
            "Expected one label per regression output. Received labels of "
            f"shape {y.shape} for outputs of shape {outputs['teacher'].shape}. "
            "Pass task='classification' if the models predict classes."
        )
    target = y.reshape(-1).astype("float64")
    figures, errors = {}, {}
    for name, output in outputs.items():
        prediction = output.reshape(-1).astype("float64")
        errors[name] = prediction - target
        figures[name] = {
            "mae": float(np.mean(np.abs(errors[name]))),
            "rmse": float(np.sqrt(np.mean(np.square(errors[name])))),
        }
        if name != "teacher":
            figures[name]["rmse_to_teacher"] = float(
                np.sqrt(np.mean(np.square(prediction - teacher)))
            )
    return figures, {"errors": errors}


def _size_on_disk(model, name):
    """Bytes of the model in a `.keras` file without optimizer state, or of
    its weights in a `.npz` file when it cannot be saved as `.keras`."""
    with tempfile.TemporaryDirectory() as directory:
        try:
            file = os.path.join(directory, "model.keras")
            _without_optimizer(model).save(file)
            return os.path.getsize(file), "keras"
        except (NotImplementedError, TypeError, ValueError) as error:
            reason = " ".join(str(error).split()).split(". ")[0]
            warnings.warn(
                f"Could not save the {name} as a .keras file ({reason}); its "
                "size on disk is that of its weights alone, in a .npz file. "
                "Give it a get_config() and register it with "
                "keras.saving.register_keras_serializable to measure the "
                ".keras file.",
                stacklevel=3,
            )
            file = os.path.join(directory, "weights.npz")
            np.savez(file, *model.get_weights())
            return os.path.getsize(file), "npz"


def _without_optimizer(model):
    """A copy without compile state, so the optimizer's slots are not counted
    (a `.keras` file always saves a built optimizer)."""
    if getattr(model, "optimizer", None) is None:
        return model
    copy = keras.saving.deserialize_keras_object(model_configs.uncompiled_config(model))
    copy.set_weights(model.get_weights())
    return copy


def _student_vs_teacher(figures, metric):
    student, teacher = figures["student"], figures["teacher"]
    return {
        "param_ratio": teacher["params"] / max(student["params"], 1),
        "size_ratio": teacher["size_bytes"] / student["size_bytes"],
        "speedup": teacher["latency_ms"] / student["latency_ms"],
        "metric_delta": student[metric] - teacher[metric],
    }


def _columns(task):
    if task == "classification":
        return [("accuracy", "accuracy"), ("agreement", "agreement")]
    return [("mae", "MAE"), ("rmse", "RMSE"), ("rmse_to_teacher", "RMSE to teacher")]


def _table(figures):
    columns = _columns(figures["task"])
    header = ["model", "params", "size (KB)", "latency (ms)"] + [t for _, t in columns]
    rows = []
    for name, values in figures["models"].items():
        row = [
            name,
            f"{values['params']:,}",
            f"{values['size_bytes'] / 1024:.1f}",
            f"{values['latency_ms']:.2f}",
        ]
        row += [_number(values.get(key)) for key, _ in columns]
        rows.append(row)
    return header, rows


def _number(value):
    return (
        "-" if value is None else f"{value:.4g}" if abs(value) >= 10 else f"{value:.3f}"
    )


def _title(figures):
    return (
        f"Distillation report: {figures['task']} on {figures['samples']} "
        f"samples (latency: median per batch of {figures['latency_batch_size']} "
        "on this machine)"
    )


def _summary(figures):
    metric = figures["metric"]
    versus = figures["student_vs_teacher"]
    text = (
        f"The student has {_times(versus['param_ratio'], 'fewer', 'more')} "
        f"parameters than the teacher, is {_times(versus['size_ratio'], 'smaller', 'larger')} "
        f"on disk and {_times(versus['speedup'], 'faster', 'slower')}; "
        f"{metric} {versus['metric_delta']:+.3f} vs the teacher"
    )
    if "student_vs_baseline" in figures:
        text += (
            f", {figures['student_vs_baseline']['metric_delta']:+.3f} vs the baseline"
        )
    better = "higher" if metric == "accuracy" else "lower"
    lines = [text + f" ({better} is better)."]
    if "training" in figures:
        lines.append(plots.describe_training(figures["training"]))
    return lines


def _times(ratio, above, below):
    """`2.0x faster` for a ratio of 2, `2.0x slower` for 0.5."""
    return f"{ratio:.1f}x {above}" if ratio >= 1 else f"{1 / ratio:.1f}x {below}"


def _write(figures, arrays, history, path):
    os.makedirs(path, exist_ok=True)
    files = {}
    name = (
        "accuracy_vs_size" if figures["task"] == "classification" else "error_vs_size"
    )
    files["quality_vs_size"] = plots.save(
        plots.quality_vs_size(figures), os.path.join(path, f"{name}.png")
    )
    if figures["task"] == "classification":
        figure, name = plots.confidence(arrays["confidence"]), "confidence"
    else:
        figure, name = plots.errors(arrays["errors"]), "errors"
    files[name] = plots.save(figure, os.path.join(path, f"{name}.png"))
    if history is not None:
        files["training"] = plots.save(
            plots.training_curves(history), os.path.join(path, "training.png")
        )
    files["markdown"] = os.path.join(path, "report.md")
    with open(files["markdown"], "w", encoding="utf-8") as file:
        file.write(_markdown(figures, files))
    return files


def _markdown(figures, files):
    header, rows = _table(figures)
    lines = ["# Distillation report", "", _title(figures) + ".", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [""] + _summary(figures) + [""]
    for key, file in files.items():
        if file.endswith(".png"):
            lines += [f"![{key}]({os.path.basename(file)})", ""]
    return "\n".join(lines)
