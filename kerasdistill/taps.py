"""Taps: one forward pass of a network yields its output and the outputs of
the intermediate layers that the distillation losses name.

A layer is named by its Keras name (`"block2_out"`). A layer inside a nested
model (a backbone model used as a layer) is named by its path,
`"backbone/block2_out"`, or by its plain name when no top-level layer has
that name and exactly one nested model holds it (it is searched
recursively). Keras forbids `/` in layer names, so paths are unambiguous.

For a functional or Sequential model, a multi-output functional model is
built once over the user's own layers (so the weights are shared). When a
tapped layer sits inside a nested model, that nested model's call is
replaced, in a re-traced copy of the outer graph, by a multi-output model
over the nested model's own layers: the network still runs once.

An attention layer's attention probabilities are tapped as
`"path/to/layer:attention_scores"`: in the re-traced graph that layer is
called with `return_attention_scores=True` (the public argument of
`keras.layers.MultiHeadAttention` and keras-hub's `TransformerEncoder`),
which returns them beside its output, shape `(batch, heads, queries, keys)`.
A layer without that argument is refused, by name.

A subclassed model has no graph to tap. It can still be tapped when its
`call` accepts `return_features=False` and, with `return_features=True`,
returns `(outputs, {name: tensor})`; the names are then the dict's keys.
"""

import difflib
import inspect

import keras
from keras import tree

from kerasdistill import _keras_internals

SEPARATOR = "/"
ATTENTION_SCORES = ":attention_scores"


def attention_tap(layer_name):
    """The tap name of the attention probabilities of `layer_name`.

    Example:

    ```python
    attention_tap("backbone/transformer_layer_3")
    # "backbone/transformer_layer_3:attention_scores"
    ```
    """
    if not isinstance(layer_name, str) or not layer_name:
        raise TypeError(
            "Expected the name (or path) of an attention layer. Received: "
            f"{layer_name!r}"
        )
    return layer_name if is_attention_tap(layer_name) else layer_name + ATTENTION_SCORES


def is_attention_tap(layer_name):
    """Whether `layer_name` names a layer's attention probabilities."""
    return isinstance(layer_name, str) and layer_name.endswith(ATTENTION_SCORES)


class TappedNetwork:
    """Runs `model` once and returns `(outputs, {layer_name: features})`.

    Args:
        model: A `keras.Model`.
        layer_names: Names (or `"outer/inner"` paths) of the layers whose
            outputs are needed.
        role: `"teacher"` or `"student"`, used in error messages.

    Example:

    ```python
    tapped = TappedNetwork(teacher, ["backbone/block2_out"], role="teacher")
    outputs, features = tapped(x, training=False)
    features["backbone/block2_out"]
    ```
    """

    def __init__(self, model, layer_names, role):
        self.model = model
        self.layer_names = list(dict.fromkeys(layer_names))
        self.role = role
        self.tap_model = None
        if not self.layer_names:
            return
        if is_graph_network(model):
            paths = {name: resolve_path(model, name, role) for name in self.layer_names}
            self.tap_model = _build_tap_model(model, paths)
        elif not returns_features(model):
            raise ValueError(_subclassed_message(model, self.layer_names, role))

    def __call__(self, inputs, training):
        if not self.layer_names:
            return self.model(inputs, training=training), {}
        if self.tap_model is None:  # a feature-returning subclassed model
            outputs, features = _call_returning_features(
                self.model, inputs, training, self.role
            )
            return outputs, select_features(
                features, self.layer_names, self.model, self.role
            )
        outputs, features = self.tap_model(inputs, training=training)
        return outputs, features


def feature_spec(model, layer_name, role):
    """The symbolic output (shape, dtype) of a tapped layer, or of the
    model's outputs when `layer_name` is `None`; `None` when unknown (a
    subclassed model that was never built).

    Example:

    ```python
    spec = feature_spec(teacher, "backbone/block2_out", "teacher")
    spec.shape  # (None, 4, 4, 32)
    ```
    """
    if is_graph_network(model):
        if layer_name is None:
            return model.output
        path = resolve_path(model, layer_name, role)
        if is_attention_tap(layer_name):
            return _build_tap_model(model, {layer_name: path}).output[1][layer_name]
        container = model if len(path) == 1 else path[-2]
        return _output_in_graph(container, path[-1], role, layer_name)
    inputs = _symbolic_inputs(model)
    if inputs is None:
        return None
    if layer_name is None:
        return model.compute_output_spec(inputs, training=False)
    if not returns_features(model):
        raise ValueError(_subclassed_message(model, [layer_name], role))
    result = model.compute_output_spec(inputs, training=False, return_features=True)
    _check_feature_pair(result, model, role)
    return select_features(result[1], [layer_name], model, role)[layer_name]


def find_layer(model, layer_name, role):
    """Returns the layer of `model` named `layer_name` (a name or an
    `"outer/inner"` path), with a clear error when there is none or when
    it is shared.

    Example:

    ```python
    layer = find_layer(student, "backbone/block2_out", role="student")
    ```
    """
    return resolve_path(model, layer_name, role)[-1]


def resolve_path(model, layer_name, role):
    """Returns the layers from `model` down to `layer_name`: `[layer]` for
    a top-level layer, `[backbone, layer]` for one inside a nested model."""
    if not isinstance(layer_name, str) or not layer_name:
        raise TypeError(
            f"Expected a layer name (a non-empty string) to tap in the {role}. "
            f"Received: {layer_name!r}"
        )
    if is_attention_tap(layer_name):
        path = resolve_path(model, layer_name[: -len(ATTENTION_SCORES)], role)
        _check_returns_attention(path[-1], layer_name, role)
        return path
    if SEPARATOR in layer_name:
        path = _follow(model, layer_name, role)
    else:
        matches = [p for p in _paths(model) if p[-1].name == layer_name]
        top_level = [p for p in matches if len(p) == 1]
        if top_level:
            matches = top_level
        if not matches:
            raise ValueError(_unknown_message(model, layer_name, role))
        if len(matches) > 1:
            found = sorted(_path_name(p) for p in matches)
            raise ValueError(
                f"Expected one layer named '{layer_name}' in the {role} "
                f"'{model.name}'. Received {len(matches)} nested layers with "
                f"that name: {found}. Name the one you mean by its path, "
                f"e.g. '{found[0]}'."
            )
        path = matches[0]
    container = model
    for layer in path:
        _output_in_graph(container, layer, role, layer_name)
        container = layer
    return path


def named_layers(model):
    """`[(path, layer)]` for every layer of `model`, nested functional and
    Sequential models searched, each named by its `"outer/inner"` path.

    Example:

    ```python
    [path for path, _ in named_layers(classifier)][-2:]
    # ["bert_backbone/pooled_dense", "logits"]
    ```
    """
    return [(_path_name(path), path[-1]) for path in _paths(model)]


def output_layer(model, tensor):
    """The layer of the functional `model` that produces its output
    `tensor`, looking into nested models; `None` when not found.

    Example:

    ```python
    output_layer(model, model.outputs[0]).activation
    ```
    """
    for layer in reversed(model.layers):
        try:
            outputs = tree.flatten(layer.output)
        except (AttributeError, ValueError):  # no or several call sites
            continue
        if any(output is tensor for output in outputs):
            if isinstance(layer, keras.Model) and is_graph_network(layer):
                return output_layer(layer, layer.outputs[outputs.index(tensor)])
            return layer
    return None


def is_graph_network(model):
    """Whether `model` is a functional or a built Sequential model: one
    whose symbolic `inputs` and `outputs` are known."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):  # subclassed, or Sequential unbuilt
        return False


def returns_features(model):
    """Whether a subclassed model follows the feature-returning convention:
    its `call` accepts `return_features`."""
    return "return_features" in inspect.signature(model.call).parameters


def select_features(features, layer_names, model, role):
    """Picks `layer_names` from the dict a feature-returning model gave."""
    if not isinstance(features, dict):
        raise ValueError(
            f"Expected the {role} '{model.name}' called with "
            "`return_features=True` to return `(outputs, {name: tensor})`. "
            f"Received features of type {type(features).__name__}."
        )
    for name in layer_names:
        if name not in features:
            raise ValueError(
                _unknown_message(model, name, role, names=sorted(features))
            )
    return {name: features[name] for name in layer_names}


def _call_returning_features(model, inputs, training, role):
    result = model(inputs, training=training, return_features=True)
    _check_feature_pair(result, model, role)
    return result


def _check_feature_pair(result, model, role):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ValueError(
            f"Expected the {role} '{model.name}' called with "
            "`return_features=True` to return a pair `(outputs, {name: "
            f"tensor}})`. Received: {type(result).__name__}."
        )


def _symbolic_inputs(model):
    """Symbolic inputs of a built subclassed model, from its build config."""
    if not model.built:
        return None
    config = model.get_build_config() or {}
    if "input_shape" not in config:
        return None
    return tree.map_shape_structure(
        lambda shape: keras.KerasTensor((None, *shape[1:])), config["input_shape"]
    )


def _build_tap_model(model, paths):
    """A functional model returning `[outputs, {key: features}]` for the
    `{key: [layer, ...]}` paths, over `model`'s own layers."""
    graph = _as_functional(model)
    nested, direct, attention = {}, {}, {}
    for key, path in paths.items():
        if len(path) > 1:
            nested.setdefault(id(path[0]), (path[0], {}))[1][key] = path[1:]
        else:
            kind = attention if is_attention_tap(key) else direct
            kind.setdefault(id(path[0]), []).append(key)
    if not nested and not attention:
        features = {
            key: _output_in_graph(graph, layer, "model", key)
            for key, (layer,) in paths.items()
        }
        return keras.Model(
            graph.input, [graph.output, features], name=f"{model.name}_taps"
        )
    inner = {
        op_id: _build_tap_model(layer, sub) for op_id, (layer, sub) in nested.items()
    }
    features = {}

    def call_function(layer, *args, **kwargs):
        if id(layer) in inner:
            outputs, inner_features = inner[id(layer)](*args, **kwargs)
            features.update(inner_features)
        elif id(layer) in attention:
            outputs, scores = _WithAttentionScores(layer)(*args, **kwargs)
            features.update(dict.fromkeys(attention[id(layer)], scores))
        else:
            outputs = layer(*args, **kwargs)
        features.update(dict.fromkeys(direct.get(id(layer), ()), outputs))
        return outputs

    # The outer graph is traced again with each nested model's call replaced
    # by its tap model (and each tapped attention layer returning its
    # scores); every layer is the user's own (weights shared).
    traced = keras.models.clone_model(
        graph, clone_function=lambda layer: layer, call_function=call_function
    )
    features = {key: features[key] for key in paths}
    return keras.Model(
        traced.input, [traced.output, features], name=f"{model.name}_taps"
    )


def _as_functional(model):
    if not isinstance(model, keras.Sequential):
        return model
    inputs, outputs = model.inputs, model.outputs
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )


def _output_in_graph(container, layer, role, layer_name):
    """The output of the one call of `layer` inside `container`'s graph; a
    shared layer (several calls in that graph) is refused."""
    outputs = _keras_internals.layer_outputs_in_graph(_as_functional(container), layer)
    if len(outputs) > 1:
        raise ValueError(
            f"Expected the {role}'s layer '{layer_name}' to be used once, "
            f"but '{layer.name}' is shared ({len(outputs)} call sites in "
            f"'{container.name}'), so its output is ambiguous. Tap a layer "
            "that follows the call you mean (e.g. an Identity or Activation "
            "layer added after it)."
        )
    return outputs[0]


class _WithAttentionScores(keras.layers.Layer):
    """Calls an attention layer with `return_attention_scores=True`: its
    own symbolic shape function knows one output only (keras-hub's
    `TransformerEncoder.compute_output_shape`), so this wrapper traces the
    real call for both."""

    def __init__(self, layer):
        super().__init__(name=f"{layer.name}_with_scores", dtype=layer.dtype_policy)
        self.layer = layer

    def call(self, *args, training=None, **kwargs):
        kwargs["return_attention_scores"] = True
        return self.layer(*args, training=training, **kwargs)


def _check_returns_attention(layer, layer_name, role):
    parameters = inspect.signature(layer.call).parameters
    if "return_attention_scores" not in parameters:
        raise ValueError(
            f"Expected the {role}'s layer '{layer_name[: -len(ATTENTION_SCORES)]}' "
            "to return its attention probabilities through a "
            "`return_attention_scores` call argument, as "
            "keras.layers.MultiHeadAttention and keras_hub.layers."
            f"TransformerEncoder do. Received a {type(layer).__name__}, whose "
            "call has no such argument, so its attention cannot be read "
            "(keras-hub's TransformerDecoder and the decoder layers of its "
            "language models do not return it). Distill its hidden states "
            "instead (kerasdistill.layer_mapping), or tap an encoder layer."
        )


def _paths(model, prefix=()):
    """Every `[outer, ..., layer]` path in `model`, descending into nested
    functional and Sequential models."""
    for layer in model.layers:
        path = (*prefix, layer)
        yield list(path)
        if isinstance(layer, keras.Model) and is_graph_network(layer):
            yield from _paths(layer, path)


def _path_name(path):
    return SEPARATOR.join(layer.name for layer in path)


def _follow(model, layer_name, role):
    parts = layer_name.split(SEPARATOR)
    path, container = [], model
    for depth, part in enumerate(parts):
        children = {layer.name: layer for layer in container.layers}
        if part not in children:
            raise ValueError(_unknown_message(model, layer_name, role))
        layer = children[part]
        path.append(layer)
        is_last = depth == len(parts) - 1
        if not is_last and not (
            isinstance(layer, keras.Model) and is_graph_network(layer)
        ):
            raise ValueError(
                f"Expected '{SEPARATOR.join(parts[: depth + 1])}' in the {role} "
                f"'{model.name}' to be a functional or Sequential model "
                f"holding '{parts[depth + 1]}'. Received a "
                f"{type(layer).__name__}, whose inner layers cannot be tapped."
            )
        container = layer
    return path


def _unknown_message(model, layer_name, role, names=None):
    kind = "features" if names is not None else "layers"
    if names is None:
        names = [_path_name(p) for p in _paths(model)]
    leaves = {name.rsplit(SEPARATOR, 1)[-1]: name for name in names}
    close = difflib.get_close_matches(layer_name, names, n=3, cutoff=0.4)
    close += [
        leaves[leaf]
        for leaf in difflib.get_close_matches(
            layer_name.rsplit(SEPARATOR, 1)[-1], list(leaves), n=3, cutoff=0.6
        )
        if leaves[leaf] not in close
    ]
    hint = f" Did you mean {close[:3]}?" if close else ""
    return (
        f"Expected a layer named '{layer_name}' in the {role} "
        f"'{model.name}'. Received no such layer.{hint} Available {kind}: "
        f"{names}"
    )


def _subclassed_message(model, layer_names, role):
    return (
        f"Expected the {role} to be a functional or Sequential model to tap "
        f"its layers {layer_names}. Received a subclassed model "
        f"'{model.name}' ({type(model).__name__}), whose layer outputs are "
        "not part of a graph. Either give its `call` a `return_features` "
        "argument that returns `(outputs, {name: tensor})`:\n\n"
        "    def call(self, x, training=None, return_features=False):\n"
        "        h = self.block1(x)\n"
        "        outputs = self.head(h)\n"
        "        return (outputs, {'block1': h}) if return_features else outputs\n\n"
        "or rebuild it with the functional API over its own layers (weights "
        "shared), e.g. `inputs = keras.Input(shape); h = model.block1(inputs); "
        "keras.Model(inputs, model.head(h))`."
    )


def tapped(layer_names):
    """The layers the losses tap (those that are not `None`)."""
    return [name for name in layer_names if name is not None]


def select(taps_, layer_name):
    """From `(outputs, features)`, the outputs (`layer_name` `None`) or the
    features of the tapped layer `layer_name`."""
    outputs, features = taps_
    return outputs if layer_name is None else features[layer_name]
