"""Checks that the data to cache is not randomly augmented: a cache freezes
one view of each input, while random augmentation needs the teacher to
see each new view (Beyer et al. 2022)."""

import warnings

from kerasdistill import _keras_internals
from kerasdistill.data import input_batches

_AUGMENTATION_LAYERS = ("RandAugment", "AugMix", "MixUp", "CutMix", "Solarization")


def _random_ops(ops):
    """The random ones among a pipeline's TensorFlow ops (augmentation)."""
    return sorted(
        {
            op
            for op in ops
            if not op.endswith("Dataset")
            and (
                "Random" in op
                or op.startswith("Stateful")
                or "TruncatedNormal" in op
                or "Multinomial" in op
            )
        }
    )


def warn_if_random(data):
    """Warns when the `tf.data.Dataset` `data` has random ops (augmentation,
    which a cache would freeze), or when TensorFlow cannot serialize its
    pipeline to check it."""
    if not input_batches.is_tf_dataset(data):
        return
    pipeline = _keras_internals.dataset_ops(data)
    if pipeline is None:
        warnings.warn(
            "TensorFlow cannot serialize the data pipeline, so kerasdistill "
            "cannot check it for random augmentation. A cache freezes one "
            "version of each input: make sure the pipeline does not augment "
            "randomly.",
            stacklevel=3,
        )
        return
    ops = _random_ops(pipeline)
    if ops:
        warnings.warn(
            f"The data pipeline uses random operations {ops}. If they "
            "augment the inputs, the cache freezes one augmented version of "
            "each input and the student never sees the others; with random "
            "augmentation, teacher and student must see the same augmented "
            "input at each step (Beyer et al. 2022): fit on the data itself "
            "instead of caching.",
            stacklevel=3,
        )


def augmentation_layers(model):
    return [
        layer.name
        for layer in _all_layers(model)
        if type(layer).__name__.startswith("Random")
        or type(layer).__name__ in _AUGMENTATION_LAYERS
    ]


def _all_layers(model):
    """The layers of `model`, those of nested models (and of any layer with
    a public `layers` list, like `keras.layers.Pipeline`) included."""
    found = []
    for layer in getattr(model, "layers", None) or []:
        found.append(layer)
        found.extend(_all_layers(layer))
    return found
