"""Each private Keras (and tf.distribute) access of
`kerasdistill._keras_internals` still works on the installed release: a
Keras upgrade that changes one fails here, by name, rather than somewhere
deep in a tap or a strategy."""

import inspect

import keras
import pytest

from kerasdistill import _keras_internals


def test_layer_outputs_in_graph_tells_call_sites_in_this_graph_apart():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(4, name="dense")
    shared = keras.layers.Dense(4, name="shared")
    hidden = dense(inputs)
    outputs = shared(shared(hidden))
    model = keras.Model(inputs, outputs)
    keras.Model(inputs, dense(inputs))  # another graph calls `dense` again

    (output,) = _keras_internals.layer_outputs_in_graph(model, dense)
    assert output is hidden
    first, second = _keras_internals.layer_outputs_in_graph(model, shared)
    assert second is outputs and first is not second


@pytest.mark.tensorflow_only(reason="tf.distribute strategies")
def test_created_strategy_and_several_workers():
    import tensorflow as tf

    outside = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert _keras_internals.created_strategy(outside) is None
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        inside = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert _keras_internals.created_strategy(inside) is strategy
    assert not _keras_internals.spans_several_workers(strategy)
    from tensorflow.python.distribute import collective_all_reduce_strategy

    extended = collective_all_reduce_strategy.CollectiveAllReduceExtended
    assert callable(getattr(extended, "_in_multi_worker_mode", None))


@pytest.mark.tensorflow_only(reason="Keras's TensorFlow trainer builds through it")
def test_multi_worker_build_overrides_a_method_keras_still_calls():
    build = getattr(keras.Model, "_maybe_symbolic_build", None)
    assert callable(build)
    assert {"iterator", "data_batch"} <= set(inspect.signature(build).parameters)
