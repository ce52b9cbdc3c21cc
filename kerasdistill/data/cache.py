"""Teacher outputs computed once and fed to the `Distiller` with its batches.

A teacher forward pass often costs several times a student training step.
When the inputs are not randomly augmented, the teacher's outputs on them
never change, so `cache_teacher_outputs` runs the teacher once and returns
a `CachedTeacherOutputs` (`kerasdistill.data.cached_batches`) whose batches
carry them; the `Distiller` reads the teacher's part of a batch instead of
running it.

Format of a batch (documented, so that a pipeline may map over it): a Keras
`(x, y, sample_weight)` tuple -- `(x, y)` without sample weights, `x` alone
without labels -- whose `x` is a dict

    {
        "inputs": the inputs, as given,
        "kerasdistill_cache:teacher=<name>,params=<count>": {
            "outputs": the teacher's outputs (`training=False`), or their
                top-k targets `{"top_k_logits", "top_k_indices"}` when
                every loss reading them is a `LogitsDistillation(top_k=k)`,
            "features": {teacher_layer_name: that layer's output},
        },
    }

The teacher's key (no user input is named so) says which teacher the cache
was built for: a cache built for another teacher, or lacking a tapped layer
that the losses need, is refused before training. A cache on disk also
records the number of samples and a checksum of the teacher's weights,
checked when it is reused.

Every backend. The teacher runs with the current Keras backend on numpy
batches (`tf.function` under TensorFlow, Keras's compiled predict step
under JAX and PyTorch). TensorFlow is imported when a cache is saved,
loaded or turned into a `tf.data.Dataset`, not with `kerasdistill`.
"""

import hashlib
import json
import os
import shutil
import warnings

import keras
import numpy as np
from keras import tree

from kerasdistill import checks
from kerasdistill import taps
from kerasdistill.data import cached_batches
from kerasdistill.data import input_batches
from kerasdistill.data import randomness
from kerasdistill.data import top_k_outputs
from kerasdistill.losses import keras_compat

MARKER = "kerasdistill_cache"


INPUTS = "inputs"


OUTPUTS = "outputs"


FEATURES = "features"


METADATA_FILE = "kerasdistill_cache.json"


_FORMAT = 2


_DTYPES = ("float16", "float32", "float64")


def cache_teacher_outputs(
    teacher,
    data,
    distillation_losses=None,
    batch_size=32,
    shuffle=True,
    path=None,
    dtype=None,
    overwrite=False,
):
    """Runs `teacher` once over `data` and returns batches that carry its
    outputs, for `kerasdistill.Distiller.fit` / `evaluate`.

    The teacher runs in inference mode (`training=False`), batch by batch.
    The returned `CachedTeacherOutputs` (a `keras.utils.PyDataset`; its
    `as_dataset()` is a `tf.data.Dataset`) yields the inputs, the labels
    and sample weights when `data` has them, the teacher's outputs and the
    outputs of the teacher layers that `distillation_losses` tap (see the
    module docstring for the format). A `Distiller` whose teacher is
    `teacher` trains on it without running the teacher: an epoch then
    costs about a student-only epoch, on every backend. With `path`, the cache is written there and a later
    call (in another run) with the same `path` reuses it instead of running
    the teacher, after checking that it was built for this teacher (name,
    parameter count, weights), these tapped layers and this many samples.

    Do not cache when the inputs are randomly augmented (in the data
    pipeline or by layers of the student): the teacher must see the same
    augmented input as the student (Beyer et al. 2022), and a cache holds
    the teacher's outputs on one fixed version of each input. Both cases are
    detected and warned about where possible.

    Args:
        teacher: The trained teacher, a `keras.Model`.
        data: What `fit()` takes: inputs `x` (numpy arrays or tensors of
            any backend, a dict or list of them), a tuple `(x, y)` or
            `(x, y, sample_weight)` of those, or a `tf.data.Dataset` /
            finite `keras.utils.PyDataset` yielding batches of those. A
            tuple is read as `(x, y, sample_weight)`, as Keras does; pass
            several inputs as a list or dict. Anything else (a Python
            generator, strings) raises a `TypeError` naming these.
        distillation_losses: The losses the cache will serve (one or a
            list); the teacher layers they tap (`teacher_layer_name`) are
            cached too. `None` caches the final outputs only. When every
            loss on the final outputs is a `LogitsDistillation(top_k=k)`,
            only the teacher's top-k logits and their indices are stored
            (O(k) per token instead of O(vocabulary)).
        batch_size: Size of the batches the teacher runs on and the returned
            cache yields (the last may be smaller), like `fit()`'s. `None`
            returns a `tf.data.Dataset` of single samples, for a pipeline
            of your own (`.shuffle(n).batch(b)`), and runs the teacher on
            batches of 32; a `tf.data.Dataset` given as `data` keeps its own
            batches for the teacher.
        shuffle: Whether the batches are reshuffled at each epoch, as
            `fit(shuffle=True)` does. Only with a `batch_size`.
        path: A directory to write the cache to, or to reuse it from.
            `None` holds it in memory.
        dtype: `None` keeps the teacher's dtype; `"float16"` halves the
            memory and disk taken by the teacher's outputs and features
            (the losses compute in float32 either way).
        overwrite: Rebuild the cache at `path` even if one is there.

    Returns:
        A `CachedTeacherOutputs`, reshuffled at each epoch, when
        `batch_size` is given; else a `tf.data.Dataset` of single samples.

    Example:

    ```python
    losses = [kerasdistill.LogitsDistillation(temperature=4.0)]
    cached = kerasdistill.cache_teacher_outputs(
        teacher, (x_train, y_train), losses, batch_size=64
    )
    distiller = kerasdistill.Distiller(teacher, student, losses)
    distiller.compile("adam", loss="sparse_categorical_crossentropy")
    distiller.fit(cached, epochs=20)  # the teacher does not run
    ```

    Reference:
        Beyer et al., "Knowledge distillation: A good teacher is patient and
        consistent", CVPR 2022. https://arxiv.org/abs/2106.05237
    """
    checks.check_model(teacher, "teacher")
    _check_batch_size(batch_size, shuffle)
    if dtype is not None:
        checks.check_choice(dtype, _DTYPES, "dtype")
    layer_names = teacher_layer_names(distillation_losses)
    top_k = top_k_outputs.top_k_loss(distillation_losses, teacher)
    source = input_batches.InputBatches(data, batch_size or 32)
    if path is not None:
        wanted = _metadata(teacher, layer_names, dtype, top_k)
        if not overwrite and _holds_cache(path):
            wanted.update(source.describe())
            stored = _read_metadata(path)
            _check_reusable(stored, wanted, path)
            return _batches(_load(path), batch_size, shuffle)
    randomness.warn_if_random(data)
    network = taps.TappedNetwork(teacher, layer_names, "teacher")
    element = _concatenate(
        _teacher_batches(network, source, marker_key(teacher), dtype, top_k)
    )
    if path is not None:
        _prepare_directory(path, overwrite)
        wanted.update(_save(element, path))
        with open(os.path.join(path, METADATA_FILE), "w") as file:
            json.dump(wanted, file, indent=2)
    return _batches(element, batch_size, shuffle)


def teacher_layer_names(distillation_losses):
    """The teacher layers that `distillation_losses` tap, in order, once.

    Example:

    ```python
    hint = kerasdistill.FeatureDistillation("mse", "t_hidden", "s_hidden")
    kerasdistill.cache.teacher_layer_names([hint])  # ["t_hidden"]
    ```
    """
    if distillation_losses is None:
        return []
    if not isinstance(distillation_losses, (list, tuple)):
        distillation_losses = [distillation_losses]
    names = [keras_compat.teacher_layer_name(loss) for loss in distillation_losses]
    return list(dict.fromkeys(name for name in names if name is not None))


def marker_key(teacher):
    """The marker key of batches cached for `teacher`.

    Example:

    ```python
    kerasdistill.cache.marker_key(teacher)
    # "kerasdistill_cache:teacher=teacher,params=85002"
    ```
    """
    return f"{MARKER}:teacher={teacher.name},params={_params(teacher)}"


def is_cached(x):
    """Whether `x` (the `x` of a batch, or its spec) is a cached batch."""
    return bool(_teacher_keys(x))


def _teacher_keys(x):
    if not isinstance(x, dict):
        return []
    return [key for key in x if isinstance(key, str) and key.startswith(f"{MARKER}:")]


def split(x):
    """`(inputs, teacher_taps)` of the `x` of a batch: for a cached batch,
    its inputs and `(teacher_outputs, {layer_name: features})`; for any
    other, `(x, None)`.

    Example:

    ```python
    inputs, teacher_taps = kerasdistill.cache.split(batch_x)
    ```
    """
    keys = _teacher_keys(x)
    if not keys:
        return x, None
    teacher = x[keys[0]]
    return x[INPUTS], (teacher[OUTPUTS], teacher[FEATURES])


def warn_if_student_augments(student):
    """Warns when the student has random augmentation layers: the cached
    outputs come from the inputs before augmentation."""
    augmenting = randomness.augmentation_layers(student)
    if augmenting:
        warnings.warn(
            "The student has random augmentation layers "
            f"{augmenting}, but the teacher outputs come from a cache, "
            "computed once on the inputs before augmentation: the student "
            "learns to map augmented inputs to the teacher's outputs on "
            "other inputs. Teacher and student must see the same augmented "
            "input (Beyer et al. 2022); fit on the inputs themselves so "
            "that the teacher runs at each step.",
            stacklevel=3,
        )


def check_cached(x, teacher, layer_names):
    """Raises a `ValueError` unless the cached batch (or batch spec) `x` was
    built for `teacher` and holds the teacher layers `layer_names`."""
    if isinstance(teacher, (list, tuple)):
        raise ValueError(
            "Expected a Distiller with one teacher to read cached teacher "
            f"outputs. Received a cache for a Distiller with {len(teacher)} "
            "teachers. Fit on the inputs themselves (each teacher runs once "
            "per step), or wrap the teachers in one keras.Model and cache "
            "its outputs."
        )
    keys = _teacher_keys(x)
    expected = marker_key(teacher)
    if keys != [expected]:
        raise ValueError(
            "Expected teacher outputs cached for this Distiller's teacher "
            f"('{expected}'). Received a cache built for "
            f"{[key[len(MARKER) + 1 :] for key in keys]}. Rebuild it with "
            "kerasdistill.cache_teacher_outputs(distiller.teacher, data, "
            "distiller.distillation_losses), or fit on the inputs themselves."
        )
    cached = sorted(x[keys[0]][FEATURES])
    missing = [name for name in layer_names if name not in cached]
    if missing:
        raise ValueError(
            "Expected the cache to hold the teacher layers that the "
            f"distillation losses tap: {list(layer_names)}. Received a cache "
            f"of the layers {cached}, without {missing}. Rebuild it with "
            "kerasdistill.cache_teacher_outputs(teacher, data, "
            "distillation_losses) given the same losses as the Distiller."
        )


def check_dataset(data, teacher, layer_names, student):
    """Checks cached teacher outputs before training (a
    `CachedTeacherOutputs`, its arrays, or a `tf.data.Dataset` of cached
    batches from its element spec), and warns when `student` augments its
    inputs; does nothing for other data."""
    if isinstance(data, cached_batches.CachedTeacherOutputs):
        x = data.x
    elif input_batches.is_tf_dataset(data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data.element_spec)
    elif isinstance(data, tuple):  # validation_data=(x, y, sample_weight)
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    else:
        x = data
    if is_cached(x):
        check_cached(x, teacher, layer_names)
        warn_if_student_augments(student)


def _check_batch_size(batch_size, shuffle):
    if batch_size is None:
        if shuffle is not True:
            raise ValueError(
                "Expected shuffle=True (the default) with batch_size=None: "
                "`shuffle` applies to the batches the cache yields. Received: "
                f"shuffle={shuffle!r}. Pass a "
                "batch_size, or shuffle the single samples yourself."
            )
        return
    checks.check_positive_int(batch_size, "batch_size")
    if not isinstance(shuffle, bool):
        raise TypeError(
            f"Expected `shuffle` to be True or False. Received: shuffle={shuffle!r}"
        )


def _metadata(teacher, layer_names, dtype, top_k_loss):
    """What a cache on disk records about what it was built for."""
    return {
        "top_k": None if top_k_loss is None else top_k_loss.top_k,
        "format": _FORMAT,
        "teacher": teacher.name,
        "teacher_params": _params(teacher),
        "teacher_weights_sha256": _weights_digest(teacher),
        "layer_names": layer_names,
        "dtype": dtype,
    }


def _params(teacher):
    return teacher.count_params() if teacher.built else None


def _weights_digest(teacher):
    digest = hashlib.sha256()
    for weight in teacher.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _teacher_batches(network, source, marker, dtype, top_k_loss):
    """Yields `(cached_x, y, sample_weight)` numpy batches (None where
    `data` has no labels or weights), with the top-k targets of
    `top_k_loss` as the outputs when it is given."""
    run = _teacher_function(network)
    empty = True
    for x, y, sample_weight in source:
        outputs, features = run(x)
        if top_k_loss is not None:
            outputs = top_k_loss.top_k_targets(outputs)
        cached = {
            INPUTS: x,
            marker: {OUTPUTS: _cast(outputs, dtype), FEATURES: _cast(features, dtype)},
        }
        empty = False
        yield tree.map_structure(
            keras.ops.convert_to_numpy, (cached, y, sample_weight), none_is_leaf=False
        )
    if empty:
        raise ValueError("Expected `data` to hold samples. Received no batch.")


def _teacher_function(network):
    """`x -> (outputs, features)` in numpy, compiled by the backend: a
    `tf.function` under TensorFlow (which also runs in a `tf.distribute`
    scope on the local replica), else Keras's own predict step (jitted
    under JAX, without gradients under PyTorch)."""
    if keras.backend.backend() == "tensorflow":
        run = input_batches.tf().function(
            lambda x: network(x, training=False), reduce_retracing=True
        )
        return lambda x: tree.map_structure(keras.ops.convert_to_numpy, run(x))
    return _TeacherRunner(network).predict_on_batch


class _TeacherRunner(keras.Model):
    """A model whose `predict_on_batch` runs the tapped teacher once, so
    that Keras compiles it for the backend; the teacher's variables are its
    own (tracked through `teacher`), and it is never trained or saved."""

    def __init__(self, network):
        super().__init__(name=f"{network.model.name}_cache_runner")
        self.teacher = network.model
        self.network = network

    def call(self, x):
        return self.network(x, training=False)


def _cast(structure, dtype):
    if dtype is None:
        return structure
    return tree.map_structure(
        lambda t: (
            np.asarray(t).astype(dtype)
            if np.issubdtype(np.asarray(t).dtype, np.floating)
            else np.asarray(t)
        ),
        structure,
    )


def _concatenate(batches):
    batches = list(batches)
    return tree.map_structure(
        lambda *arrays: np.concatenate(arrays), *batches, none_is_leaf=False
    )


def _batches(element, batch_size, shuffle):
    """The cache of the numpy arrays `element` (`(x, y, sample_weight)`)."""
    if batch_size is None:
        return cached_batches.batched_dataset(element, None, shuffle)
    return cached_batches.CachedTeacherOutputs(*element, batch_size, shuffle)


def _save(element, path):
    """Writes the arrays with `tf.data.Dataset.save`; returns what the
    metadata records about the data."""
    _, y, sample_weight = element
    cached_batches.batched_dataset(element, None, shuffle=False).batch(1024).save(path)
    return {
        "samples": len(tree.flatten(element[0])[0]),
        "labels": y is not None,
        "sample_weights": sample_weight is not None,
    }


def _load(path):
    """The arrays of a cache saved by `_save`."""
    batches = input_batches.tf().data.Dataset.load(path).as_numpy_iterator()
    return keras.utils.unpack_x_y_sample_weight(_concatenate(batches))


def _holds_cache(path):
    return os.path.isfile(os.path.join(path, METADATA_FILE))


def _read_metadata(path):
    with open(os.path.join(path, METADATA_FILE)) as file:
        return json.load(file)


def _check_reusable(stored, wanted, path):
    differences = [
        f"{key}: cached {stored.get(key)!r}, wanted {wanted[key]!r}"
        for key in (
            "format",
            "teacher",
            "teacher_params",
            "teacher_weights_sha256",
            "samples",
            "labels",
            "sample_weights",
            "dtype",
            "top_k",
        )
        if stored.get(key) != wanted[key]
    ]
    missing = [
        n for n in wanted["layer_names"] if n not in stored.get("layer_names", [])
    ]
    if missing:
        differences.append(
            f"layer_names: cached {stored.get('layer_names')}, wanted "
            f"{wanted['layer_names']} (missing {missing})"
        )
    if differences:
        raise ValueError(
            f"Expected the cache at '{path}' to match this teacher, its "
            "tapped layers and this data. Received a cache built for other "
            f"ones: {'; '.join(differences)}. Pass overwrite=True to rebuild "
            "it, or another path."
        )


def _prepare_directory(path, overwrite):
    if not os.path.exists(path) or not os.listdir(path):
        return
    is_snapshot = os.path.isfile(os.path.join(path, "dataset_spec.pb"))
    if not (_holds_cache(path) or is_snapshot):
        raise ValueError(
            f"Expected `path` to be a new or empty directory, or a cache. "
            f"Received: path='{path}', which holds other files "
            "(kerasdistill does not delete them). Choose another path."
        )
    if not overwrite:
        raise ValueError(
            f"Expected a complete cache at '{path}'. Received an incomplete "
            "one (its build was interrupted). Pass overwrite=True to rebuild "
            "it."
        )
    shutil.rmtree(path)


def fit_arguments(arguments):
    """`fit()` / `evaluate()` arguments (as bound by their signature) with a
    `CachedTeacherOutputs` given as `x` or `validation_data` replaced by
    what feeds it the cheapest way on this backend (see
    `kerasdistill.data.cached_batches`); other arguments as they are.

    Example:

    ```python
    cached = kerasdistill.cache_teacher_outputs(teacher, (x, y), batch_size=8)
    kerasdistill.cache.fit_arguments({"x": cached, "epochs": 2})  # for fit()
    ```
    """
    arguments = dict(arguments)
    data = arguments.get("x")
    if isinstance(data, cached_batches.CachedTeacherOutputs):
        given = [
            name
            for name in ("y", "sample_weight", "batch_size")
            if arguments.get(name) is not None
        ]
        if given:
            raise ValueError(
                "Expected the labels, sample weights and batch size of cached "
                "teacher outputs to come from the cache. Received "
                f"{given} as well. Pass them to kerasdistill."
                "cache_teacher_outputs(teacher, (x, y, sample_weight), "
                "batch_size=...) instead."
            )
        feed = data.fit_arguments()
        arguments.update(feed)
        if "shuffle" in arguments:  # fit(): the cache's own (tf.data's: none)
            arguments["shuffle"] = data.shuffle and "y" in feed
    validation = arguments.get("validation_data")
    if isinstance(validation, cached_batches.CachedTeacherOutputs):
        feed = validation.fit_arguments()
        if "y" in feed:  # arrays: Keras batches them by validation_batch_size
            arguments["validation_data"] = (feed["x"], feed["y"], feed["sample_weight"])
            arguments["validation_batch_size"] = feed["batch_size"]
        else:
            arguments["validation_data"] = feed["x"]
    return arguments
