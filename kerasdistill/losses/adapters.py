"""Adapters: a learned projection of the student's tapped feature into the
teacher's feature space, built from the two tapped shapes.

What must match depends on the feature loss (`"shape"`: everything, as for
MSE; `"spatial"`: the positions, as for attention maps; `"channels"`: the
last axis, as for Gram matrices; `"none"`: nothing, as for the relational
losses, which compare samples with each other). Feature maps are
channels-last, Keras's default.
"""

import keras

MATCHES = ("shape", "spatial", "channels", "none")

_PROJECTIONS = {
    2: lambda units: keras.layers.Dense(units, dtype="float32"),
    3: lambda units: keras.layers.Conv1D(units, 1, dtype="float32"),
    4: lambda units: keras.layers.Conv2D(units, 1, dtype="float32"),
    5: lambda units: keras.layers.Conv3D(units, 1, dtype="float32"),
}


def mismatch(student_shape, teacher_shape, match):
    """What differs that `match` needs equal: a subset of
    `{"rank", "spatial", "channels"}` (shapes without the batch axis;
    unknown sizes are taken to match)."""
    if match == "none":
        return set()
    if len(student_shape) != len(teacher_shape):
        return {"rank"}
    differs = set()
    if match in ("shape", "spatial") and not _same(
        student_shape[:-1], teacher_shape[:-1]
    ):
        differs.add("spatial")
    if match in ("shape", "channels") and not _same(
        student_shape[-1:], teacher_shape[-1:]
    ):
        differs.add("channels")
    return differs


def build_adapter(student_shape, teacher_shape, match, batchnorm, name):
    """Returns a built `keras.Sequential` mapping the student's feature to
    what `match` needs of the teacher's, or `None` when nothing differs.

    Vectors get a `Dense` layer; sequences and feature maps a 1x1
    convolution (with `BatchNormalization` when `batchnorm`). Feature maps
    whose height and width differ are first average-pooled (when the
    student's are an integer multiple of the teacher's) or else bilinearly
    resized to the teacher's. `check_adapter` raises the same errors
    without building anything.

    Args:
        student_shape: The student's feature shape, without the batch axis.
        teacher_shape: The teacher's feature shape, without the batch axis.
        match: One of `"shape"`, `"spatial"`, `"channels"`, `"none"`.
        batchnorm: Whether a `BatchNormalization` follows the 1x1
            convolution; `True` where the adapter has none (vectors, or
            nothing to project) raises a `ValueError`.
        name: The adapter's name.

    Returns:
        A built `keras.Sequential` or `None`.

    Example:

    ```python
    adapter = kerasdistill.losses.adapters.build_adapter(
        (8, 8, 16), (4, 4, 64), "shape", True, "adapter"
    )
    adapter(keras.ops.zeros((2, 8, 8, 16))).shape  # (2, 4, 4, 64)
    ```
    """
    plan = _plan(student_shape, teacher_shape, match, batchnorm)
    if not plan:
        return None
    adapter = keras.Sequential([make() for make in plan], name=name)
    adapter.build((None, *student_shape))
    return adapter


def check_adapter(student_shape, teacher_shape, match, batchnorm):
    """Raises the `ValueError` that `build_adapter` would, building nothing.

    Example:

    ```python
    kerasdistill.losses.adapters.check_adapter((8,), (8, 8), "shape", False)
    # ValueError: ... their ranks differ ...
    ```
    """
    _plan(student_shape, teacher_shape, match, batchnorm)


def _plan(student_shape, teacher_shape, match, batchnorm):
    """The adapter's layers, as functions that create them."""
    differs = mismatch(student_shape, teacher_shape, match)
    rank = len(student_shape) + 1
    plan = []
    if differs and ("rank" in differs or rank not in _PROJECTIONS):
        raise ValueError(
            _cannot(
                student_shape,
                teacher_shape,
                "their ranks differ"
                if "rank" in differs
                else f"rank {rank} is not supported",
            )
        )
    if "spatial" in differs:
        if rank != 4:
            raise ValueError(
                _cannot(
                    student_shape,
                    teacher_shape,
                    "their lengths differ and only 2D feature maps are resized",
                )
            )
        plan.append(_spatial_layer(student_shape[:2], teacher_shape[:2]))
    if "channels" in differs:
        if teacher_shape[-1] is None:
            raise ValueError(
                _cannot(
                    student_shape, teacher_shape, "the teacher's channels are unknown"
                )
            )
        plan.append(lambda: _PROJECTIONS[rank](teacher_shape[-1]))
    if batchnorm:
        if "channels" not in differs or rank == 2:
            raise ValueError(
                "Expected adapter_batchnorm=True only where the automatic "
                "adapter ends with a 1x1 convolution (sequences and feature "
                "maps whose channels differ). Received a student feature of "
                f"shape {tuple(student_shape)} and a teacher feature of shape "
                f"{tuple(teacher_shape)}, for which the adapter is "
                f"{_describe(plan, rank)}. Pass adapter_batchnorm=False."
            )
        plan.append(lambda: keras.layers.BatchNormalization(dtype="float32"))
    return plan


def _describe(plan, rank):
    if not plan:
        return "not needed (nothing to project)"
    if rank == 2:
        return "a Dense layer"
    return "a pooling or resizing layer, without a projection"


def _spatial_layer(student_size, teacher_size):
    """A function creating the pooling or resizing layer, once checked."""
    if None in (*student_size, *teacher_size):
        raise ValueError(
            _cannot(
                student_size,
                teacher_size,
                "their heights or widths are unknown (give the models fixed "
                "input sizes)",
            )
        )
    if all(s > t and s % t == 0 for s, t in zip(student_size, teacher_size)):
        pool = tuple(s // t for s, t in zip(student_size, teacher_size))
        return lambda: keras.layers.AveragePooling2D(pool, dtype="float32")
    return lambda: keras.layers.Resizing(
        *teacher_size, interpolation="bilinear", dtype="float32"
    )


def _same(first, second):
    return all(a is None or b is None or a == b for a, b in zip(first, second))


def _cannot(student_shape, teacher_shape, why):
    return (
        "adapter='auto' cannot map the student's feature of shape "
        f"{tuple(student_shape)} onto the teacher's {tuple(teacher_shape)}: "
        f"{why}. Pass your own `adapter=` (a keras Layer, e.g. "
        "keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(n)])), "
        "or tap layers whose shapes an adapter can map."
    )
