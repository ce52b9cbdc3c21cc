"""born_again: each generation learns from the previous one, scores,
stopping when the score stops improving, the direction of a metric, bad
input. Every test runs on TensorFlow, JAX and PyTorch."""

import keras
import pytest
from conftest import BACKEND
from conftest import make_classifier
from conftest import make_regressor

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# Eager steps are the fast path for tiny models on TensorFlow and PyTorch;
# JAX is faster compiled.
EAGER = BACKEND != "jax"


def build_classifier():
    model = make_classifier(8)
    model.compile("adam", SPARSE_CE, metrics=["accuracy"], run_eagerly=EAGER)
    return model


class RecordTeachers(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.teachers = []

    def on_train_begin(self, logs=None):
        self.teachers.append(getattr(self.model, "teacher", None))


def test_generation_k_plus_1_learns_from_generation_k(classification_data):
    x, y = classification_data
    record = RecordTeachers()
    result = kd.born_again(
        build_classifier,
        (x[:48], y[:48]),
        (x[48:], y[48:]),
        kd.LogitsDistillation(temperature=1.0),
        generations=3,
        monitor="accuracy",
        epochs=2,
        batch_size=48,
        callbacks=[record],
    )
    assert len(result.models) == 3 and len(set(map(id, result.models))) == 3
    assert record.teachers == [None, result.models[0], result.models[1]]
    assert "distillation_loss" not in result.histories[0]
    assert all("distillation_loss" in h for h in result.histories[1:])
    for model, score in zip(result.models, result.scores):
        logs = model.evaluate(x[48:], y[48:], verbose=0, return_dict=True)
        assert score == pytest.approx(logs["accuracy"])
    assert result.mode == "max" and not result.stopped_early
    assert result.best_model is result.models[result.best_index]
    assert result.scores[result.best_index] == max(result.scores)


def frozen_regressor():
    """Every generation is the same function: the score never improves."""
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(1, kernel_initializer="ones")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.0), "mse", run_eagerly=EAGER)
    return model


@pytest.mark.parametrize("patience, trained", [(1, 2), (2, 3), (None, 4)])
def test_stops_when_the_score_stops_improving(patience, trained, regression_data):
    result = kd.born_again(
        frozen_regressor,
        regression_data,
        regression_data,
        kd.RegressionDistillation("mse"),
        generations=4,
        patience=patience,
        epochs=1,
        batch_size=64,
    )
    assert len(result.models) == len(result.scores) == trained
    assert result.stopped_early == (trained < 4)
    assert result.mode == "min" and result.best_index == 0
    assert len(set(result.scores)) == 1


def regression_builder():
    def build():
        model = make_regressor(4)
        model.compile("adam", "mse", metrics=["mae"], run_eagerly=EAGER)
        return model

    return build


def test_one_generation_is_plain_training(regression_data):
    result = kd.born_again(
        regression_builder(),
        regression_data,
        regression_data,
        kd.RegressionDistillation("mse"),
        generations=1,
        monitor="mae",
        epochs=1,
        batch_size=32,
        shuffle=False,
    )
    assert len(result.models) == 1 and result.mode == "min"
    x, y = regression_data
    assert result.scores[0] == pytest.approx(
        result.models[0].evaluate(x, y, verbose=0, return_dict=True)["mae"]
    )


def test_tf_data_datasets_work(regression_data):
    # A tf.data dataset feeds fit() and evaluate() on every backend.
    import tensorflow as tf

    x, y = regression_data
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    result = kd.born_again(
        regression_builder(),
        data,
        data,
        kd.RegressionDistillation("mse"),
        generations=2,
        monitor="mae",
        epochs=1,
        shuffle=False,
    )
    assert len(result.models) == 2 and result.mode == "min"
    assert result.scores[1] == pytest.approx(
        result.models[1].evaluate(data, verbose=0, return_dict=True)["mae"]
    )


@pytest.mark.parametrize(
    "metric, mode",
    [
        ("accuracy", "max"),
        (keras.metrics.AUC(name="auc"), "max"),
        (keras.metrics.R2Score(name="r2"), "max"),
        ("mae", "min"),
        (keras.metrics.RootMeanSquaredError(name="rmse"), "min"),
    ],
)
def test_auto_mode_follows_the_metrics_direction(metric, mode, regression_data):
    x, y = regression_data

    def build():
        model = make_regressor(4)
        model.compile("adam", "mse", metrics=[metric], run_eagerly=EAGER)
        return model

    name = metric if isinstance(metric, str) else metric.name
    y = (y > 0).astype("float32") if name in ("accuracy", "auc") else y
    result = kd.born_again(
        build,
        (x, y),
        (x, y),
        kd.RegressionDistillation("mse"),
        generations=1,
        monitor=name,
        epochs=1,
        batch_size=64,
    )
    assert result.mode == mode


def test_auto_mode_of_an_unknown_metric_asks_for_the_mode(regression_data):
    def peak_error(y_true, y_pred):
        return keras.ops.max(keras.ops.abs(y_true - y_pred), axis=-1)

    def build():
        model = make_regressor(4)
        model.compile("adam", "mse", metrics=[peak_error], run_eagerly=EAGER)
        return model

    with pytest.raises(
        ValueError, match='Expected mode="min" or mode="max".*peak_error'
    ):
        kd.born_again(
            build,
            regression_data,
            regression_data,
            kd.RegressionDistillation("mse"),
            generations=1,
            monitor="peak_error",
            epochs=1,
            batch_size=64,
        )
    result = kd.born_again(
        build,
        regression_data,
        regression_data,
        kd.RegressionDistillation("mse"),
        generations=1,
        monitor="peak_error",
        mode="min",
        epochs=1,
        batch_size=64,
    )
    assert result.mode == "min"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"generations": 0}, ValueError, "generations >= 1"),
        ({"generations": 2.5}, TypeError, "generations` to be an integer"),
        ({"patience": 0}, ValueError, "patience >= 1"),
        ({"mode": "up"}, ValueError, "`mode` to be one of"),
        ({"student_loss_weight": 2.0}, ValueError, r"in \[0, 1\]"),
        ({"build_fn": "model"}, TypeError, "build_fn"),
        ({"build_fn": lambda: make_classifier(4)}, ValueError, "compiled model"),
        ({"monitor": "val_accuracy"}, ValueError, "one of the model's evaluation keys"),
        ({"distillation_losses": "kl"}, TypeError, "Expected each distillation loss"),
    ],
)
def test_bad_input_raises(kwargs, error, match, classification_data):
    arguments = {
        "build_fn": build_classifier,
        "data": classification_data,
        "validation_data": classification_data,
        "distillation_losses": kd.LogitsDistillation(),
        "generations": 2,
        "epochs": 1,
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        kd.born_again(**arguments)
