"""Student export to a SavedModel or a TFLite (LiteRT) file, checked against
the Keras student by running the written file.

Only the student is exported: no teacher, adapter or auxiliary head. The
student is written with Keras' SavedModel export (`Model.export(format=
"tf_saved_model")`), and for TFLite converted by TensorFlow's TFLite
converter; the result is loaded back (`tf.saved_model.load`, or the LiteRT
interpreter) and run on sample inputs, and its outputs are compared with
the Keras student's. A converter that silently writes a broken model (NaN
outputs, a lost layer) is caught here, not on a phone.

On every backend the default route (`via="tensorflow"`) writes a TensorFlow
graph: under TensorFlow, the student is exported where it is; under JAX or
PyTorch, it is saved to a `.keras` file (a format every backend reads),
loaded in a subprocess with `KERAS_BACKEND=tensorflow` and exported there.
The parity check compares the written file with the student of the calling
backend, so the round trip is checked too. `via="backend"` uses the Keras
export of the calling backend instead (jax2tf under JAX). TensorFlow is
imported only when an export runs, never by `import kerasdistill`.
"""

import dataclasses
import importlib
import importlib.util
import os
import shutil

import keras
import numpy as np
from keras import tree

from kerasdistill import checks
from kerasdistill.deploy import export_samples
from kerasdistill.deploy import export_worker
from kerasdistill.deploy import tf_files

_FORMATS = ("saved_model", "tflite")


_QUANTIZATIONS = (None, "float16", "dynamic", "int8")


_IO_TYPES = ("float32", "int8")


_VIAS = ("tensorflow", "backend")


# Largest |exported - Keras| allowed, as a fraction of the largest |Keras
# output| on the samples: float32 is exact up to the order of operations;
# float16 weights keep ~3 significant digits; dynamic range quantization
# rounds weights (and activations, per batch) to 8 bits; full int8 rounds
# every tensor to 8 bits with ranges calibrated on the representative data.
_TOLERANCES = {None: 1e-4, "float16": 1e-2, "dynamic": 5e-2, "int8": 0.1}


_PARITY_SAMPLES = 256


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What `kerasdistill.export_student` wrote, and how well it matches.

    Attributes:
        path: The written file (TFLite) or directory (SavedModel).
        format: `"saved_model"` or `"tflite"`.
        quantization: `None`, `"float16"`, `"dynamic"` or `"int8"`.
        bytes: Size on disk (a SavedModel's files summed).
        max_abs_diff: Largest `|exported - Keras|` output difference.
        relative_diff: `max_abs_diff` over the largest `|Keras output|`.
        tolerance: The largest `relative_diff` accepted.
        top1_agreement: Fraction of samples whose argmax agrees, for a
            classifier; `None` otherwise.
        num_samples: Number of samples of the parity check.
        backend: The Keras backend of the student the file is checked
            against (`"tensorflow"`, `"jax"` or `"torch"`).
        route: How the file was written: `"tensorflow"` (Keras' export in
            this process, TensorFlow backend), `"tensorflow-subprocess"`
            (a `.keras` copy exported by a TensorFlow-backend subprocess) or
            `"jax2tf"` (Keras' JAX export in this process).
    """

    path: str
    format: str
    quantization: object
    bytes: int
    max_abs_diff: float
    relative_diff: float
    tolerance: float
    top1_agreement: object
    num_samples: int
    backend: object = None
    route: object = None

    def __str__(self):
        top1 = (
            ""
            if self.top1_agreement is None
            else f", top-1 agreement {self.top1_agreement:.1%}"
        )
        origin = (  # said when the student was not exported in-process by TF
            ""
            if self.backend in (None, "tensorflow")
            else f" (from the {self.backend} student, via {self.route})"
        )
        return (
            f"{self.format} ({self.quantization or 'float32'}) {self.path}"
            f"{origin}: {self.bytes / 1024:.1f} KiB, max |diff| "
            f"{self.max_abs_diff:.3g} ({self.relative_diff:.2%} of the output "
            f"scale, tolerance {self.tolerance:.2%}){top1} on "
            f"{self.num_samples} samples"
        )


def export_student(
    distiller_or_model,
    path,
    format="saved_model",
    quantization=None,
    representative_data=None,
    input_type="float32",
    output_type="float32",
    sample_inputs=None,
    tolerance=None,
    classifier=None,
    overwrite=False,
    via="tensorflow",
):
    """Exports the student and checks the written file against it.

    The student (`distiller.student`, or the model itself) is written as a
    SavedModel directory (`format="saved_model"`, endpoint `serve`) or a
    TFLite flatbuffer (`format="tflite"`, a path ending in `.tflite`), then
    loaded back and run on sample inputs. The parity check runs on
    `sample_inputs`; else on the first 256 samples of `representative_data`;
    else on 64 standard normal inputs (float inputs of fixed shape only).
    It raises when the exported outputs
    are not finite, or differ from the Keras student's by more than
    `tolerance` times the largest `|Keras output|`.

    It works on every Keras backend; the reference outputs are always those
    of the student in the calling backend. With `via="tensorflow"` (the
    default) the file holds a TensorFlow graph: under TensorFlow the student
    is exported where it is; under JAX or PyTorch it is saved to a
    temporary `.keras` file, which a subprocess with
    `KERAS_BACKEND=tensorflow` (on the CPU) loads and exports with Keras'
    `Model.export`. That subprocess starts on the first such export (seconds:
    it imports TensorFlow), serves the later ones and exits with Python. The
    student must then load there: custom layers registered with
    `keras.saving.register_keras_serializable` in an importable module (not
    `__main__`), with a `get_config()`; Lambda layers with an
    `output_shape` and no use of module globals (Keras' limits for a
    `.keras` file). With `via="backend"` the calling backend's own Keras
    export is used: jax2tf under JAX (any model JAX runs, no `.keras` round
    trip; the weights become graph constants, the SavedModel runs only on
    the platform it was exported on, and the TFLite file carries extra
    shape ops); PyTorch's needs `torch_xla`.

    TFLite files are run with the LiteRT interpreter (`ai_edge_litert`,
    `pip install 'kerasdistill[export]'`), or with the deprecated
    `tf.lite.Interpreter` (with a warning) when it is not installed.

    Args:
        distiller_or_model: A `kerasdistill.Distiller` (its student is
            exported) or a built `keras.Model` with one output tensor and
            one input, or several (a dict or a list of inputs, as keras-hub
            models take): the SavedModel's `serve` endpoint and the TFLite
            signature take the same named inputs.
        path: Where to write: a directory for a SavedModel, a `.tflite` file.
        format: `"saved_model"` or `"tflite"`.
        quantization: TFLite only. `None` (float32), `"float16"` (weights in
            float16), `"dynamic"` (weights in int8, activations quantized on
            the fly) or `"int8"` (full integer: weights and activations in
            int8, ranges calibrated on `representative_data`).
        representative_data: Inputs typical of deployment, a numpy array
            (batch first; for several inputs, a dict of arrays keyed by
            input name or a list of arrays, as the student takes them) or a
            `tf.data.Dataset` of inputs or of `(inputs, labels)` tuples,
            batched or not; every sample is used. Required for `"int8"`; a
            few hundred samples are enough.
        input_type: `"float32"` or `"int8"` (int8 quantization only), the
            type of the TFLite model's input.
        output_type: `"float32"` or `"int8"` (int8 quantization only), the
            type of its output.
        sample_inputs: Optional inputs for the parity check, in the same
            forms as `representative_data` (a dict of arrays for a keras-hub
            model: integer token ids cannot be generated).
        tolerance: Largest accepted difference, as a fraction of the
            largest `|Keras output|`. Defaults to 1e-4 (float32), 1e-2
            (float16), 5e-2 (dynamic), 0.1 (int8).
        classifier: Whether to report the top-1 agreement. Defaults to
            `True` for outputs of shape `(batch, k)` with `k >= 2`.
        overwrite: Whether to replace an existing file or SavedModel at
            `path` (any other existing path is refused).
        via: `"tensorflow"` (Keras' TensorFlow export, in a subprocess under
            JAX or PyTorch) or `"backend"` (the Keras export of the calling
            backend: jax2tf under JAX). Both are the same under TensorFlow.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: for bad arguments, and when the parity check fails (the
            file is left at `path` for inspection).
        RuntimeError: when the conversion fails, or the written TFLite file
            does not run in the interpreter.

    Example:

    ```python
    report = kerasdistill.export_student(
        distiller, "student.tflite", format="tflite", quantization="int8",
        representative_data=x_train[:200], input_type="int8",
    )
    print(report.bytes, report.max_abs_diff, report.top1_agreement)
    kerasdistill.export_student(  # a keras-hub student: named inputs
        student_lm, "student_lm", sample_inputs={
            "token_ids": token_ids, "padding_mask": padding_mask,
        },
    )
    ```
    """
    checks.check_choice(format, _FORMATS, "format")
    if quantization not in _QUANTIZATIONS:
        raise ValueError(
            "Expected `quantization` to be one of None, 'float16', 'dynamic', "
            f"'int8'. Received: quantization={quantization!r}"
        )
    if format == "saved_model" and quantization is not None:
        raise ValueError(
            "Expected quantization=None for a SavedModel: quantization "
            "applies to TFLite exports only. Received: "
            f"format='saved_model', quantization={quantization!r}. Pass "
            "format='tflite' (and a path ending in .tflite)."
        )
    _check_io_types(input_type, output_type, quantization)
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "Expected `representative_data` with quantization='int8': "
            "full-integer quantization calibrates the activation ranges on it. "
            "Received: representative_data=None. Pass a few hundred typical "
            "inputs, e.g. representative_data=x_train[:300] or a tf.data "
            "dataset of them."
        )
    if tolerance is None:
        tolerance = _TOLERANCES[quantization]
    checks.check_positive(tolerance, "tolerance")
    checks.check_choice(via, _VIAS, "via")
    student = _student_of(distiller_or_model)
    signature = tf_files.input_signature(student)
    structure = signature[0]
    path = os.fspath(path)
    if format == "tflite" and not path.endswith(".tflite"):
        raise ValueError(
            f"Expected a TFLite path ending in '.tflite'. Received: path={path!r}"
        )
    calibration = None
    if representative_data is not None:
        calibration = export_samples.as_samples(
            representative_data, structure, "representative_data"
        )
    if sample_inputs is not None:
        samples = export_samples.as_samples(sample_inputs, structure, "sample_inputs")
    elif calibration is not None:
        samples = export_samples.take(calibration, _PARITY_SAMPLES)
    else:
        samples = export_samples.random_samples(structure)
    backend = keras.backend.backend()
    route = _route(backend, via)
    modules = (
        export_worker.custom_modules(student, backend)
        if route == "tensorflow-subprocess"
        else []
    )
    _make_room(path, format, overwrite)

    settings = dict(
        format=format,
        quantization=quantization,
        input_type=input_type,
        output_type=output_type,
    )
    if route == "tensorflow-subprocess":
        exported = export_worker.export_in_subprocess(
            student, path, settings, samples, calibration, modules, backend
        )
    else:
        export_kwargs = {"is_static": True} if backend == "jax" else {}
        exported = tf_files.export(
            student,
            signature,
            path,
            settings,
            samples,
            calibration,
            export_kwargs,
        )
    if format == "tflite":
        exported = tf_files.check_tflite(path, signature, samples)
    reference = _reference(student, samples)
    return _compare(
        path,
        format,
        quantization,
        tolerance,
        classifier,
        reference,
        exported,
        backend,
        route,
    )


def _check_io_types(input_type, output_type, quantization):
    for value, name in ((input_type, "input_type"), (output_type, "output_type")):
        checks.check_choice(value, _IO_TYPES, name)
        if value != "float32" and quantization != "int8":
            raise ValueError(
                f"Expected quantization='int8' with {name}={value!r}, which "
                f"needs full-integer quantization. Received: "
                f"quantization={quantization!r}. Pass quantization='int8' "
                f"(with representative_data), or {name}='float32'."
            )


def _route(backend, via):
    """How the file is written: in this process under TensorFlow, through a
    TensorFlow subprocess, or with the calling backend's Keras export."""
    if backend == "tensorflow":
        return "tensorflow"
    if via == "tensorflow":
        return "tensorflow-subprocess"
    if backend == "jax":
        return "jax2tf"
    if backend == "torch" and importlib.util.find_spec("torch_xla") is None:
        raise ImportError(
            "Keras' own SavedModel export under the torch backend needs "
            "torch_xla, which is not installed. Received: via='backend' with "
            "KERAS_BACKEND=torch. Pass via='tensorflow' (the default) to "
            "export a .keras copy of the student with the TensorFlow "
            "backend, or install torch_xla."
        )
    return backend


def _student_of(distiller_or_model):
    model = distiller_or_model
    if isinstance(getattr(model, "student", None), keras.Model):
        model = model.student
    checks.check_model(model, "student")
    if not model.built:
        raise ValueError(
            f"Expected a built student. Received '{model.name}', which is not "
            "built, so it has no weights to export. Train it, call it on a batch, or "
            "call `student.build(input_shape)` first."
        )
    return model


def _make_room(path, format, overwrite):
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        return
    if not overwrite:
        raise FileExistsError(
            f"Expected a new path. Received: path='{path}', which exists. Pass overwrite=True "
            "to replace it, or choose another path."
        )
    if format == "tflite" and os.path.isfile(path):
        return
    if (
        format == "saved_model"
        and os.path.isdir(path)
        and (
            not os.listdir(path) or os.path.exists(os.path.join(path, "saved_model.pb"))
        )
    ):
        shutil.rmtree(path)
        return
    kind = "a file" if format == "tflite" else "a SavedModel directory"
    raise FileExistsError(
        f"Expected {kind} at '{path}' to replace (overwrite=True replaces "
        f"only that). Received a path that is not one. Choose another path, "
        "or remove it yourself."
    )


def _reference(student, samples):
    """The outputs of the Keras student, in the calling backend."""
    outputs = tree.flatten(student(samples, training=False))
    if len(outputs) != 1:
        raise ValueError(
            "export_student supports students with one output tensor. "
            f"Received '{student.name}', which returns {len(outputs)}. Export "
            "it with `student.export(...)` and check it yourself."
        )
    return keras.ops.convert_to_numpy(outputs[0]).astype("float32")


def _compare(
    path,
    format,
    quantization,
    tolerance,
    classifier,
    reference,
    exported,
    backend,
    route,
):
    if not np.all(np.isfinite(reference)):
        raise ValueError(
            "Expected the Keras student's outputs on the sample inputs to be "
            "finite, to check the export against them. Received NaN or "
            "infinite outputs. Check the student (and "
            "the sample inputs) before exporting."
        )
    if exported.shape != reference.shape:
        raise ValueError(
            f"Expected the exported model at '{path}' to return the Keras "
            f"student's output shape {reference.shape}. Received outputs of "
            f"shape {exported.shape}. Export it with `student.export(...)` "
            "and check it yourself."
        )
    if not np.all(np.isfinite(exported)):
        bad = int(np.sum(~np.all(np.isfinite(exported.reshape(len(exported), -1)), 1)))
        raise ValueError(
            f"The exported model at '{path}' ({format}, quantization="
            f"{quantization!r}) returns NaN or infinite outputs on {bad} of "
            f"{len(exported)} samples, where the Keras student's are finite: "
            "the conversion is broken (with float16, weights beyond the "
            "float16 range become infinite). Try another quantization."
        )
    max_abs_diff = float(np.max(np.abs(exported - reference)))
    scale = max(float(np.max(np.abs(reference))), 1e-12)
    relative_diff = max_abs_diff / scale
    if classifier is None:
        classifier = reference.ndim == 2 and reference.shape[-1] >= 2
    top1 = None
    if classifier:
        top1 = float(
            np.mean(np.argmax(exported, axis=-1) == np.argmax(reference, axis=-1))
        )
    report = ExportReport(
        path=path,
        format=format,
        quantization=quantization,
        bytes=_size(path),
        max_abs_diff=max_abs_diff,
        relative_diff=relative_diff,
        tolerance=tolerance,
        top1_agreement=top1,
        num_samples=len(reference),
        backend=backend,
        route=route,
    )
    if relative_diff > tolerance:
        raise ValueError(
            f"The exported model differs from the Keras student by more than "
            f"the tolerance: {report}. The file is left at '{path}' for "
            "inspection. Use a lighter quantization, give more "
            "representative_data (int8), or pass a larger `tolerance` if "
            "this precision is acceptable."
        )
    return report


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
