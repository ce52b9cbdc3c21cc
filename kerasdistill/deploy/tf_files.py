"""Writing and running the exported files under TensorFlow: Keras's
SavedModel export, the TFLite converter (with its quantizations) and the
LiteRT interpreter. Used in the caller's process on the TensorFlow
backend, and in the export worker's otherwise."""

import tempfile
import warnings

import keras
import numpy as np
from keras import tree

from kerasdistill import checks


def input_signature(student):
    """The `input_signature` of Keras' export, from public attributes: a
    list of one positional argument holding `keras.InputSpec`s whose batch
    dimension is free (a Sequential model: its input; a functional one: its
    input structure, a dict keyed by input name or a list for several
    inputs; a subclassed one: the shape it was built with). The specs are
    named as the inputs (a dict's keys), and so are the inputs of the
    SavedModel's signature and of the TFLite signature runner."""
    symbolic = checks.symbolic_inputs(student) or []
    if isinstance(student, keras.Sequential) and symbolic:
        signature = [
            _spec(tensor.shape, tensor.dtype, tensor.name) for tensor in symbolic
        ]
    elif symbolic and isinstance(student.input, dict):
        signature = [
            {key: _spec(t.shape, t.dtype, key) for key, t in student.input.items()}
        ]
    elif symbolic:
        signature = [
            tree.map_structure(lambda t: _spec(t.shape, t.dtype, t.name), student.input)
        ]
    else:
        shape = (student.get_build_config() or {}).get("input_shape")
        if not _is_shape(shape):
            raise ValueError(
                "export_student supports subclassed students built on one "
                f"input tensor. Received '{student.name}', a subclassed "
                "model built with "
                f"{student.get_build_config() or 'no recorded input shape'}. "
                "Call it once on a batch of its single input, or export it "
                "with `student.export(...)` and check it yourself."
            )
        signature = [_spec(shape, student.input_dtype, None)]
    outputs = checks.symbolic_outputs(student)
    if outputs is not None and len(outputs) != 1:
        raise ValueError(
            "export_student supports students with one output tensor. "
            f"Received '{student.name}' with {len(outputs)} outputs. Export "
            "it with `student.export(...)` and check it yourself."
        )
    names = [spec.name for spec in tree.flatten(signature)]
    if len(names) > 1 and (None in names or len(set(names)) != len(names)):
        raise ValueError(
            "Expected the student's inputs to have distinct names, which name "
            f"the exported signature's inputs. Received: {names}. Name them, "
            "e.g. keras.Input(shape, name='token_ids')."
        )
    return signature


def _is_shape(shape):
    return isinstance(shape, (tuple, list)) and all(
        dim is None or isinstance(dim, int) for dim in shape
    )


def _spec(shape, dtype, name):
    shape = (None,) + tuple(shape)[1:]
    return keras.InputSpec(
        shape=shape, dtype=keras.backend.standardize_dtype(dtype), name=name
    )


def export(model, signature, path, settings, samples, calibration, export_kwargs):
    """Writes `model` with Keras' export in this process; returns the
    SavedModel's outputs on `samples` (`None` for TFLite, which the caller
    runs)."""
    if settings["format"] == "saved_model":
        model.export(
            path,
            format="tf_saved_model",
            verbose=False,
            input_signature=signature,
            **export_kwargs,
        )
        return _run_saved_model(path, signature, samples)
    _write_tflite(
        model,
        signature,
        path,
        settings["quantization"],
        calibration,
        settings["input_type"],
        settings["output_type"],
        export_kwargs,
    )
    return None


def _write_tflite(
    model,
    signature,
    path,
    quantization,
    calibration,
    input_type,
    output_type,
    export_kwargs,
):
    """Keras' SavedModel export, then TensorFlow's TFLite converter: the
    path that `Model.export(format="litert")` takes under TensorFlow, with
    the converter's settings set here directly."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved_model:
        model.export(
            saved_model,
            format="tf_saved_model",
            verbose=False,
            input_signature=signature,
            **export_kwargs,
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":

            def representative_dataset():  # one sample at a time
                named = _by_name(signature, calibration)
                for i in range(len(next(iter(named.values())))):
                    sample = {key: array[i : i + 1] for key, array in named.items()}
                    yield [sample[None]] if None in sample else sample

            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.as_dtype(input_type)
            converter.inference_output_type = tf.as_dtype(output_type)
        flatbuffer = converter.convert()
    with open(path, "wb") as file:
        file.write(flatbuffer)


def _run_saved_model(path, signature, samples):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    outputs = loaded.serve(tree.map_structure(tf.constant, samples))
    return np.asarray(tree.flatten(outputs)[0], dtype="float32")


def _by_name(signature, samples):
    """`{input name: samples}` for the TFLite signature runner; a single
    input keeps the name `None` (the runner names it)."""
    specs = tree.flatten(signature)
    arrays = tree.flatten(samples)
    if len(specs) == 1:
        return {None: arrays[0]}
    return {spec.name: array for spec, array in zip(specs, arrays)}


def check_tflite(path, signature, samples):
    try:
        return _run_tflite(path, signature, samples)
    except RuntimeError as error:
        raise RuntimeError(
            f"The TFLite file written at '{path}' does not run in the "
            f"interpreter, so it cannot be checked: {error}"
        ) from error


def _run_tflite(path, signature, samples):
    interpreter = _interpreter(path)
    runner = interpreter.get_signature_runner()
    input_details = runner.get_input_details()
    named = _by_name(signature, samples)
    if None in named:
        (name,) = input_details
        named = {name: named[None]}
    if sorted(named) != sorted(input_details):
        raise RuntimeError(
            f"Expected the TFLite signature to take the inputs {sorted(named)}. "
            f"Received a file whose signature takes {sorted(input_details)}."
        )
    outputs = runner(
        **{name: _quantize(array, input_details[name]) for name, array in named.items()}
    )
    output_details = runner.get_output_details()
    (output_name,) = output_details
    return _dequantize(outputs[output_name], output_details[output_name])


def _interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        warnings.warn(
            "The LiteRT interpreter (package ai-edge-litert) is not "
            "installed, so the exported file is checked with the deprecated "
            "tf.lite.Interpreter. Install it with "
            "`pip install 'kerasdistill[export]'`.",
            stacklevel=4,
        )
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path)


def _quantize(samples, details):
    """Float samples to the int8 input of an `input_type="int8"` model."""
    if details["dtype"] != np.int8 or not np.issubdtype(samples.dtype, np.floating):
        return samples.astype(details["dtype"])
    scale, zero_point = details["quantization"]
    values = np.round(samples / scale + zero_point)
    return np.clip(values, -128, 127).astype(np.int8)


def _dequantize(values, details):
    """The int8 output of an `output_type="int8"` model to float32."""
    if details["dtype"] != np.int8:
        return np.asarray(values, dtype="float32")
    scale, zero_point = details["quantization"]
    return (values.astype("float32") - zero_point) * scale
