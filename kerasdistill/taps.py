"""Taps: one forward pass of a network yields its output and the outputs of
the intermediate layers that the distillation losses name.

For a functional or Sequential model with tapped layers, a multi-output
functional model is built once over the same layers (so the weights are the
user's own). A network with no tapped layer is called as it is.
"""

import difflib

import keras


class TappedNetwork:
    """Runs `model` once and returns `(outputs, {layer_name: features})`.

    Args:
        model: A `keras.Model`.
        layer_names: Names of the layers whose outputs are needed.
        role: `"teacher"` or `"student"`, used in error messages.

    Example:

    ```python
    tapped = TappedNetwork(teacher, ["block2_out"], role="teacher")
    outputs, features = tapped(x, training=False)
    features["block2_out"]
    ```
    """

    def __init__(self, model, layer_names, role):
        self.model = model
        self.layer_names = list(dict.fromkeys(layer_names))
        self.role = role
        self._tap_model = (
            _build_tap_model(model, self.layer_names, role)
            if self.layer_names
            else None
        )

    def __call__(self, inputs, training):
        if self._tap_model is None:
            return self.model(inputs, training=training), {}
        outputs, features = self._tap_model(inputs, training=training)
        return outputs, features


def _build_tap_model(model, layer_names, role):
    if not _is_graph_network(model):
        raise ValueError(
            f"Expected the {role} to be a functional or Sequential model to "
            f"tap its layers {layer_names}. Received a subclassed model "
            f"'{model.name}' ({type(model).__name__}), whose layer outputs "
            "are not part of a graph. Rebuild it with the functional API "
            "(keras.Model(inputs, outputs)), or distill its final outputs "
            "only."
        )
    features = {name: find_layer(model, name, role).output for name in layer_names}
    return keras.Model(
        model.input, [model.output, features], name=f"{model.name}_taps"
    )


def find_layer(model, layer_name, role):
    """Returns the layer of `model` named `layer_name`, with a clear error.

    Example:

    ```python
    layer = find_layer(student, "dense_1", role="student")
    ```
    """
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        close = difflib.get_close_matches(layer_name, names, n=3, cutoff=0.4)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Expected a layer named '{layer_name}' in the {role} "
            f"'{model.name}'. Received no such layer.{hint} Available "
            f"layers: {names}"
        )
    layer = model.get_layer(layer_name)
    if len(layer._inbound_nodes) > 1:
        raise ValueError(
            f"Expected the {role}'s layer '{layer_name}' to be used once, "
            f"but it is shared ({len(layer._inbound_nodes)} call sites), so "
            "its output is ambiguous. Tap a layer that follows the call you "
            "mean (e.g. an Identity or Activation layer added after it)."
        )
    return layer


def _is_graph_network(model):
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False
