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


@pytest.mark.tensorflow_only(reason="tf.distribute strategies")
def test_variable_strategy_names_the_scope_that_created_a_variable():
    import tensorflow as tf

    assert _keras_internals.variable_strategy(keras.Variable(1.0)) is None
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        variable = keras.Variable(1.0)
    assert _keras_internals.variable_strategy(variable) is strategy


@pytest.mark.tensorflow_only(reason="tf.data pipelines are TensorFlow graphs")
def test_dataset_ops_lists_the_ops_of_a_pipeline():
    import tensorflow as tf

    noisy = tf.data.Dataset.range(4).map(lambda i: tf.random.uniform(()))
    assert "RandomUniform" in _keras_internals.dataset_ops(noisy)
    plain = tf.data.Dataset.range(4).map(lambda i: i * 2)
    assert "Mul" in _keras_internals.dataset_ops(plain)
    assert not any("Random" in op for op in _keras_internals.dataset_ops(plain))


def test_keras_mask_leaves_samples_out_of_weighted_and_unweighted_metrics():
    y_true = keras.ops.array([0, 1, 1, 0])
    y_pred = keras.ops.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    mask = keras.ops.array([True, True, False, True])
    for weights in (None, keras.ops.array([1.0, 1.0, 1.0, 3.0])):
        metric = keras.metrics.SparseCategoricalAccuracy()
        masked = _keras_internals.with_keras_mask(keras.ops.copy(y_pred), mask)
        metric.update_state(y_true, masked, sample_weight=weights)
        assert float(metric.result()) == pytest.approx(1.0)  # the wrong one is out
    plain = keras.metrics.SparseCategoricalAccuracy()
    plain.update_state(y_true, y_pred)
    assert float(plain.result()) == pytest.approx(0.75)  # the copy was masked


def test_compile_config_of_a_torch_optimizer_loads_the_public_class():
    config = {
        "optimizer": {
            "module": "keras.src.backend.torch.optimizers.torch_adam",
            "class_name": "Adam",
            "config": {"name": "adam", "learning_rate": 0.01},
            "registered_name": None,
        },
        "loss": None,
    }

    class Loading(_keras_internals.CompileFromConfig, keras.Sequential):
        pass

    loading = Loading([keras.Input((2,)), keras.layers.Dense(1)])
    loading.compile_from_config(config)
    assert isinstance(loading.optimizer, keras.optimizers.Adam)
    if keras.backend.backend() != "torch":  # not the PyTorch class it named
        assert "torch" not in type(loading.optimizer).__module__


def test_inference_calls_turn_dropout_off_inside_a_training_call():
    class Outer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.dropout = keras.layers.Dropout(0.5, seed=0)

        def call(self, x, training=None):
            inherited = self.dropout(x)  # training=True from the outer call
            with _keras_internals.inference_calls():
                inside = self.dropout(x)
            return inherited, inside, self.dropout(x)

    x = keras.ops.ones((4, 64))
    inherited, inside, after = Outer()(x, training=True)
    assert float(keras.ops.min(inherited)) == 0.0  # dropped
    assert float(keras.ops.min(inside)) == 1.0  # inference: untouched
    assert float(keras.ops.min(after)) == 0.0  # restored
    with _keras_internals.inference_calls():  # outside any call: no effect
        assert float(keras.ops.min(keras.layers.Dropout(0.5)(x))) == 1.0


def test_epoch_logs_report_the_metrics_results_of_the_keys_a_step_logged():
    # Keras still decides the end-of-epoch logs through this method.
    decide = getattr(keras.Model, "_get_metrics_result_or_logs", None)
    assert callable(decide)
    assert list(inspect.signature(decide).parameters) == ["self", "logs"]

    class Model(_keras_internals.EpochLogs, keras.Model):
        def get_metrics_result(self):
            return {"loss": 1.0, "accuracy": 0.5, "alpha": 0.3}

    model = Model()
    # The step's keys, with the metrics' values (not the step's).
    assert model._get_metrics_result_or_logs({"loss": 9.0, "accuracy": 9.0}) == {
        "loss": 1.0,
        "accuracy": 0.5,
    }
    # Keys the metrics do not have: the step's logs, as Keras reports them.
    assert model._get_metrics_result_or_logs({"custom": 2.0}) == {"custom": 2.0}


def test_compiled_loss_is_compute_loss_without_the_regularization_losses():
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(
        2, kernel_regularizer=keras.regularizers.L2(0.5), name="dense"
    )(inputs)
    model = keras.Model(inputs, outputs)
    x = keras.ops.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    y = keras.ops.array([[0.0, 1.0], [1.0, 0.0]])
    weights = keras.ops.array([1.0, 3.0])
    assert _keras_internals.compiled_loss(model, y, model(x)) is None
    model.compile(loss="mse")
    y_pred = model(x)
    loss = _keras_internals.compiled_loss(model, y, y_pred, weights)
    squared = keras.ops.convert_to_numpy(keras.ops.mean((y_pred - y) ** 2, axis=-1))
    assert float(loss) == pytest.approx(float((squared * [1.0, 3.0]).mean()), 1e-5)
    kernel = keras.ops.convert_to_numpy(model.get_layer("dense").kernel)
    regularization = 0.5 * float((kernel**2).sum())
    total = model.compute_loss(x, y, y_pred, weights)
    assert float(total) == pytest.approx(float(loss) + regularization, 1e-5)
