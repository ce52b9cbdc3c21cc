"""The one module that reads private Keras state, for what Keras has no
public API for. `tests/test_keras_internals.py` fails loudly when a Keras
release changes it.

`layer_outputs_in_graph` finds a layer's output *inside one functional
graph*. The public `layer.output` refuses a layer called more than once
anywhere, but a layer is often also called by other graphs (a second model
built on it, a tap model), which does not make its output inside this graph
ambiguous; and a layer called twice inside the graph must be told apart
from that. `producer_of_first_argument` finds the layer feeding another
inside one graph, for the same reason.
"""

from keras import tree


def layer_outputs_in_graph(graph, layer):
    """The outputs of each call of `layer` inside the functional `graph`.

    Returns a list with one entry per call site (one tensor, or a list for a
    layer with several outputs); a layer shared inside `graph` has several.

    Example:

    ```python
    (output,) = layer_outputs_in_graph(model, model.get_layer("dense"))
    ```
    """
    keys = graph._nodes  # the keys of the nodes that make up `graph`
    found = []
    for index, node in enumerate(layer._inbound_nodes):
        if f"{id(layer)}_ib-{index}" in keys:  # keras.src.ops.function.make_node_key
            outputs = node.outputs
            found.append(outputs[0] if len(outputs) == 1 else list(outputs))
    return found


def created_strategy(model):
    """The `tf.distribute` strategy whose scope created `model`, or `None`.

    Keras's public `model.distribute_strategy` falls back to the current
    context's strategy, so it cannot tell "created outside any scope".
    """
    return model._distribute_strategy


def spans_several_workers(strategy):
    """Whether a `MultiWorkerMirroredStrategy` runs on several workers
    (`tf.distribute` exposes this only privately)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()
    )


class MultiWorkerBuild:
    """Builds a model from one replica's first batch under a multi-worker
    strategy.

    Keras 3 builds a model (`Model._maybe_symbolic_build`, private) from the
    first batch reduced across the replicas, a collective that fails on a
    nest of per-replica values under `MultiWorkerMirroredStrategy`
    (tensorflow/tensorflow#72388). Only the shapes matter, so one replica's
    batch does.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if (
            iterator is not None
            and strategy is not None
            and spans_several_workers(strategy)
        ):
            from kerasdistill import distribute

            data_batch = distribute.first_local_batch(strategy, iterator)
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def producer_of_first_argument(graph, layer):
    """The layer whose output is the first tensor argument of `layer`'s one
    call inside the functional `graph` (an `InputLayer` for a model input).

    Example:

    ```python
    producer_of_first_argument(backbone, backbone.get_layer("transformer_layer_0"))
    # the embeddings' last layer
    ```
    """
    keys = graph._nodes  # as in layer_outputs_in_graph
    for index, node in enumerate(layer._inbound_nodes):
        if f"{id(layer)}_ib-{index}" in keys:
            tensors = [
                t
                for t in tree.flatten(node.arguments.args)
                if hasattr(t, "_keras_history")
            ]
            return tensors[0]._keras_history.operation if tensors else None
    return None
