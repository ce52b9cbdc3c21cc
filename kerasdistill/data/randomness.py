"""Checks that the data to cache is not randomly augmented: a cache freezes
one view of each input, while random augmentation needs the teacher to
see each new view (Beyer et al. 2022)."""

import warnings

from kerasdistill.data import input_batches

_AUGMENTATION_LAYERS = ("RandAugment", "AugMix", "MixUp", "CutMix", "Solarization")


def _random_ops(dataset):
    """The random TensorFlow ops in `dataset`'s pipeline (augmentation)."""
    tf = input_batches.tf()
    try:
        graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    except Exception:  # A pipeline that cannot be serialized: not checked.
        return []
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes.extend(function.node_def)
    return sorted(
        {
            node.op
            for node in nodes
            if not node.op.endswith("Dataset")
            and (
                "Random" in node.op
                or node.op.startswith("Stateful")
                or "TruncatedNormal" in node.op
                or "Multinomial" in node.op
            )
        }
    )


def warn_if_random(data):
    if not input_batches.is_tf_dataset(data):
        return
    ops = _random_ops(data)
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
