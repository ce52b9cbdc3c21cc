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
    resized to the teacher's.

    Args:
        student_shape: The student's feature shape, without the batch axis.
        teacher_shape: The teacher's feature shape, without the batch axis.
        match: One of `"shape"`, `"spatial"`, `"channels"`, `"none"`.
        batchnorm: Whether a `BatchNormalization` follows the projection.
        name: The adapter's name.

    Returns:
        A built `keras.Sequential` or `None`.

    Example:

    ```python
    adapter = build_adapter((8, 8, 16), (4, 4, 64), "shape", True, "adapter")
    adapter(keras.ops.zeros((2, 8, 8, 16))).shape  # (2, 4, 4, 64)
    ```
    """
    differs = mismatch(student_shape, teacher_shape, match)
    if not differs:
        return None
    rank = len(student_shape) + 1
    layers = []
    if "rank" in differs or rank not in _PROJECTIONS:
        raise ValueError(_cannot(student_shape, teacher_shape, "their ranks differ"
                                 if "rank" in differs else f"rank {rank} is not supported"))
    if "spatial" in differs:
        if rank != 4:
            raise ValueError(_cannot(
                student_shape, teacher_shape,
                "their lengths differ and only 2D feature maps are resized",
            ))
        layers.append(_spatial_layer(student_shape[:2], teacher_shape[:2]))
    if "channels" in differs:
        if teacher_shape[-1] is None:
            raise ValueError(_cannot(
                student_shape, teacher_shape, "the teacher's channels are unknown"
            ))
        layers.append(_PROJECTIONS[rank](teacher_shape[-1]))
        if batchnorm:
            layers.append(keras.layers.BatchNormalization(dtype="float32"))
    adapter = keras.Sequential(layers, name=name)
    adapter.build((None, *student_shape))
    return adapter


def _spatial_layer(student_size, teacher_size):
    if None in (*student_size, *teacher_size):
        raise ValueError(_cannot(
            student_size, teacher_size,
            "their heights or widths are unknown (give the models fixed "
            "input sizes)",
        ))
    if all(s > t and s % t == 0 for s, t in zip(student_size, teacher_size)):
        pool = tuple(s // t for s, t in zip(student_size, teacher_size))
        return keras.layers.AveragePooling2D(pool, dtype="float32")
    return keras.layers.Resizing(*teacher_size, interpolation="bilinear",
                                 dtype="float32")


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
