"""The inputs of an export's parity check and calibration, in the student's
input structure: one array for a student with one input, a dict of arrays
(keyed by input name) or a list of arrays for one with several (keras-hub
text models take `{"token_ids", "padding_mask", ...}`)."""

import sys

import keras
import numpy as np
from keras import tree

_RANDOM_SAMPLES = 64


def as_samples(data, structure, name):
    """The samples of `data` as `structure` (of `keras.InputSpec`s) holds
    the inputs: arrays of the inputs' dtypes, with as many samples each.

    Args:
        data: Inputs as the student takes them (an array; a dict or list of
            arrays for several inputs), or a `tf.data.Dataset` of them or
            of `(inputs, labels)` tuples, batched or not.
        structure: `tf_files.input_signature(student)[0]`.
        name: The argument's name, for the error messages.

    Returns:
        `data` in `structure`, as numpy arrays.
    """
    dataset_type = _tf_dataset_type()
    if dataset_type is not None and isinstance(data, dataset_type):
        data = _dataset_inputs(data, structure, name)
    if not tree.is_nested(structure):
        return _as_array(data, structure, name)
    _check_structure(data, structure, name)
    paths = _paths(structure, name)
    arrays = tree.pack_sequence_as(
        structure,
        [
            _as_array(array, spec, path)
            for array, spec, path in zip(
                tree.flatten(_plain(data)), tree.flatten(structure), paths
            )
        ],
    )
    counts = {path: len(array) for path, array in zip(paths, tree.flatten(arrays))}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"Expected every input of `{name}` to hold as many samples. "
            f"Received: {counts}."
        )
    return arrays


def random_samples(structure):
    """64 standard normal samples of each input, when every input is a
    fixed-shape float tensor (else a `ValueError` asking for samples)."""
    rng = np.random.default_rng(0)
    specs = tree.flatten(structure)
    for spec in specs:
        shape = tuple(spec.shape)[1:]
        if any(dim is None for dim in shape) or not np.issubdtype(
            np.dtype(spec.dtype), np.floating
        ):
            raise ValueError(
                f"The student's input {spec.name or ''} (shape "
                f"{tuple(spec.shape)}, dtype {spec.dtype}) is not a "
                "fixed-shape float tensor, so no inputs can be generated for "
                "the parity check. Pass `sample_inputs` (or "
                "`representative_data`)"
                + (
                    ", a dict of arrays keyed by input name."
                    if isinstance(structure, dict)
                    else "."
                )
            )
    return tree.pack_sequence_as(
        structure,
        [
            rng.standard_normal((_RANDOM_SAMPLES,) + tuple(spec.shape)[1:]).astype(
                spec.dtype
            )
            for spec in specs
        ],
    )


def take(samples, count):
    """The first `count` samples of each input."""
    return tree.map_structure(lambda array: array[:count], samples)


def count(samples):
    return len(tree.flatten(samples)[0])


def _tf_dataset_type():
    """`tf.data.Dataset` when TensorFlow is already imported (a dataset can
    only come from it), else `None`: TensorFlow is not imported for this."""
    tf = sys.modules.get("tensorflow")
    data = getattr(tf, "data", None)
    return getattr(data, "Dataset", None)


def _dataset_inputs(dataset, structure, name):
    """The inputs of every element of `dataset`, concatenated."""
    batches = []
    for element in dataset.as_numpy_iterator():
        if isinstance(element, tuple):
            element = keras.utils.unpack_x_y_sample_weight(element)[0]
        if tree.is_nested(structure):
            _check_structure(element, structure, name)
        elif tree.is_nested(element):
            raise ValueError(
                f"Expected `{name}` to yield input arrays or (inputs, labels) "
                "tuples for the student's single input. Received elements "
                f"of structure {tree.map_structure(lambda a: a.shape, element)}; "
                "map the dataset to the student's single input."
            )
        batches.append(
            tree.pack_sequence_as(
                structure,
                [
                    array[None] if np.ndim(array) == len(spec.shape) - 1 else array
                    for array, spec in zip(
                        tree.flatten(_plain(element)), tree.flatten(structure)
                    )
                ],
            )
        )
    if not batches:
        raise ValueError(f"Expected `{name}` to hold samples. Received none.")
    return tree.map_structure(lambda *arrays: np.concatenate(arrays), *batches)


def _plain(data):
    """Lists for tuples, so that a tuple of inputs matches a list structure."""
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(value) for value in data]
    return data


def _check_structure(data, structure, name):
    if isinstance(structure, dict):
        keys = sorted(structure)
        if not isinstance(data, dict) or sorted(data) != keys:
            received = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"Expected `{name}` to be a dict of arrays keyed by the "
                f"student's input names {keys}. Received: {received}."
            )
        return
    if not isinstance(data, (list, tuple)) or len(data) != len(structure):
        received = (
            f"{len(data)} arrays"
            if isinstance(data, (list, tuple))
            else type(data).__name__
        )
        raise ValueError(
            f"Expected `{name}` to be a list of {len(structure)} arrays, one "
            f"per student input, in order. Received: {received}."
        )


def _paths(structure, name):
    if isinstance(structure, dict):
        return [f"{name}['{key}']" for key in sorted(structure)]
    return [f"{name}[{i}]" for i in range(len(structure))]


def _as_array(data, spec, name):
    input_shape = tuple(spec.shape)
    try:
        array = np.asarray(
            keras.ops.convert_to_numpy(data) if keras.ops.is_tensor(data) else data
        )
    except (ValueError, TypeError) as error:
        raise TypeError(
            f"Expected `{name}` to be a numpy array or a tf.data.Dataset. "
            f"Received: {type(data).__name__} ({error})"
        ) from error
    if array.dtype == object:
        raise TypeError(
            f"Expected `{name}` to be a numpy array of the student's input. "
            f"Received: {type(data).__name__}."
        )
    if array.size == 0:
        raise ValueError(f"Expected `{name}` to hold samples. Received none.")
    expected = input_shape[1:]
    if array.ndim != len(input_shape) or any(
        e is not None and e != a for e, a in zip(expected, array.shape[1:])
    ):
        raise ValueError(
            f"Expected `{name}` to be a batch of student inputs, of shape "
            f"(n,) + {expected}. Received shape {array.shape}."
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(
            f"Expected `{name}` to be numeric. Received dtype {array.dtype}."
        )
    array = array.astype(spec.dtype)
    if not np.all(np.isfinite(array.astype("float64"))):
        raise ValueError(
            f"Expected `{name}` to hold finite numbers. Received NaN or "
            "infinite values (the TFLite converter aborts the process when "
            "it calibrates on them)."
        )
    return array
