"""The one module that reads private Keras and TensorFlow state, for what
they have no public API for. `tests/test_keras_internals.py` fails loudly
when a release changes it.

`layer_outputs_in_graph` finds a layer's output *inside one functional
graph*. The public `layer.output` refuses a layer called more than once
anywhere, but a layer is often also called by other graphs (a second model
built on it, a tap model), which does not make its output inside this graph
ambiguous; and a layer called twice inside the graph must be told apart
from that. `producer_of_first_argument` finds the layer feeding another
inside one graph, for the same reason.

The others: the `tf.distribute` strategy a model or variable was created
under (`created_strategy`, `variable_strategy`), multi-worker detection and
the multi-worker build (`spans_several_workers`, `MultiWorkerBuild`,
`first_local_batch`), the ops of a `tf.data` pipeline (`dataset_ops`),
Keras's output mask (`with_keras_mask`), the optimizer path of configs
saved under PyTorch (`CompileFromConfig`), the `training` value that
layers called inside another layer's call inherit (`inference_calls`),
the logs Keras reports at the end of an epoch (`EpochLogs`), and the
compiled loss without the regularization losses (`compiled_loss`).
"""

import contextlib

import keras
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


def variable_strategy(variable):
    """The strategy whose scope created `variable` (a `keras.Variable` or
    a TensorFlow variable), or `None` if none did."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    return getattr(value, "_distribute_strategy", None)


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
            data_batch = first_local_batch(strategy, iterator)
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def first_local_batch(strategy, epoch_iterator):
    """The first batch of this worker's first replica (`None` when the
    `TFEpochIterator` given to `Model._maybe_symbolic_build` is empty)."""
    import tensorflow as tf

    for _, _, iterator in epoch_iterator:
        return tree.map_structure(
            lambda v: (
                strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues)
                else v
            ),
            next(iterator),
        )
    return None


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


def dataset_ops(dataset):
    """The names of the TensorFlow ops in a `tf.data.Dataset`'s pipeline
    (its serialized graph and the functions it calls), or `None` when
    TensorFlow cannot serialize the pipeline.

    Example:

    ```python
    dataset_ops(tf.data.Dataset.range(3).map(lambda i: i * 2))  # [..."Mul"...]
    ```
    """
    import tensorflow as tf

    try:
        serialized = dataset._as_serialized_graph()
    except tf.errors.OpError:
        return None
    graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes.extend(function.node_def)
    return [node.op for node in nodes]


def with_keras_mask(tensor, mask):
    """`tensor` with Keras's output mask set to `mask`: Keras's losses and
    metrics leave out the entries where it is False (`apply_mask`), for
    weighted and unweighted metrics alike. Set it on a tensor of your own
    (a copy): it is an attribute of that tensor object.

    Example:

    ```python
    masked = with_keras_mask(keras.ops.copy(y_pred), has_label > 0)
    ```
    """
    from keras.src.backend.common.masking import set_keras_mask

    set_keras_mask(tensor, mask)
    return tensor


def compiled_loss(model, y, y_pred, sample_weight=None):
    """The loss `model.compile(loss=...)` set, on `(y, y_pred)`: what
    `Model.compute_loss` returns, without the regularization losses it adds
    (walking every layer of `model` for them costs each step of an eager
    PyTorch loop). `None` when `model` was compiled without a loss.

    Example:

    ```python
    loss = compiled_loss(distiller, y, distiller.student(x))
    ```
    """
    if model._compile_loss is None:
        return None
    return model._compile_loss(y, y_pred, sample_weight)


@contextlib.contextmanager
def inference_calls():
    """Inside it, the layers called without a `training` argument run in
    inference mode (dropout off), even inside the call of a layer given
    `training=True`.

    Keras passes the `training` value of the outermost layer call on to the
    layers called inside it through its call context (private), so code
    that calls a model's layers without `training` (keras-hub's
    `generate_step`) inside a training step runs them in training mode.
    The context's value is set to `False` here and restored after.

    Example:

    ```python
    with inference_calls():
        generated = causal_lm.generate_step(prompts)  # dropout off
    ```
    """
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    if context is None:  # no layer call in progress: nothing to inherit
        yield
        return
    training = context.get_value("training")
    context.set_value("training", False)
    try:
        yield
    finally:
        context.set_value("training", training)


class CompileFromConfig:
    """The `compile_from_config` of the models that train a student: it
    builds the optimizer, so that its saved variables load.

    Keras saves an optimizer trained under PyTorch as its backend class
    (`keras.src.backend.torch.optimizers...`), which JAX and TensorFlow load
    but cannot run (Keras 3.15, plain models too); the public
    `keras.optimizers` class of the same name is loaded instead."""

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()` (used when loading)."""
        config = dict(config, optimizer=_portable(config.get("optimizer")))
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)


class EpochLogs:
    """The end-of-epoch (and `evaluate()`) logs of a model whose steps log
    some of its metrics, not all: the metrics' results for the keys the
    last step logged.

    Keras (`Trainer._get_metrics_result_or_logs`, private) reports
    `get_metrics_result()` only when the last step logged exactly its keys,
    else the last step's logs; under a `tf.distribute` strategy those hold
    the first replica's values of the compiled metrics, not the global
    ones. A Distiller's validation steps leave out `alpha` and
    `temperature`, so Keras would report them.
    """

    def _get_metrics_result_or_logs(self, logs):
        results = self.get_metrics_result()
        if isinstance(logs, dict) and logs and set(logs) <= set(results):
            return {key: results[key] for key in logs}
        return super()._get_metrics_result_or_logs(logs)


def _portable(config):
    if isinstance(config, dict):
        config = {key: _portable(value) for key, value in config.items()}
        if str(config.get("module", "")).startswith("keras.src.backend."):
            config["module"] = "keras.optimizers"
    return config
