"""Several teachers: weighted average of outputs and features, or one loss per
teacher; each teacher runs once per step; saving; bad input."""

import keras
import numpy as np
import pytest
from conftest import float_logs
from test_distiller import SPARSE_CE
from test_distiller import CallCounter

import kerasdistill as kd

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 6)).astype("float32")
Y = np.argmax(X[:, :3], 1).astype("int32")


def mlp(width, name, counter=None, hidden=5):
    """`hidden` (same name in every model) -> `logits`."""
    inputs = keras.Input((6,))
    h = counter(inputs) if counter is not None else inputs
    h = keras.layers.Dense(width, activation="relu")(h)
    h = keras.layers.Dense(hidden, name="hidden")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name=name)


def losses():
    return [
        kd.LogitsDistillation(2.0),
        kd.FeatureDistillation("mse", "hidden", "hidden"),
    ]


def hidden(model):
    return keras.Model(model.input, model.get_layer("hidden").output).predict(
        X, verbose=0
    )


def expected_losses(teacher_logits, teacher_hidden, student):
    kl = float(
        kd.LogitsDistillation(2.0).compute_loss(
            teacher_logits, student.predict(X, verbose=0)
        )
    )
    return kl + float(np.mean((teacher_hidden - hidden(student)) ** 2))


def test_average_combines_outputs_and_features_by_weight():
    teachers = [mlp(16, "t1"), mlp(8, "t2")]
    student = mlp(4, "student")
    distiller = kd.Distiller(teachers, student, losses(), teacher_weights=[3.0, 1.0])
    distiller.compile("adam", SPARSE_CE)
    logs = float_logs(distiller.evaluate(X, Y, verbose=0, return_dict=True))
    logits = 0.75 * teachers[0].predict(X, verbose=0) + 0.25 * teachers[1].predict(
        X, verbose=0
    )
    features = 0.75 * hidden(teachers[0]) + 0.25 * hidden(teachers[1])
    assert logs["distillation_loss"] == pytest.approx(
        expected_losses(logits, features, student), rel=1e-4
    )


def test_per_teacher_weights_one_loss_per_teacher_and_saves(tmp_path):
    teachers = [mlp(16, "t1"), mlp(8, "t2")]
    student = mlp(4, "student")
    distiller = kd.Distiller(
        teachers,
        student,
        losses(),
        teacher_weights=[3.0, 1.0],
        teacher_combination="per_teacher",
    )
    distiller.compile("adam", SPARSE_CE)
    logs = float_logs(distiller.evaluate(X, Y, verbose=0, return_dict=True))
    per_teacher = [
        expected_losses(t.predict(X, verbose=0), hidden(t), student) for t in teachers
    ]
    assert logs["distillation_loss"] == pytest.approx(
        0.75 * per_teacher[0] + 0.25 * per_teacher[1], rel=1e-4
    )
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    assert [t.name for t in loaded.teachers] == ["t1", "t2"]
    assert loaded.get_config()["teacher_weights"] == [3.0, 1.0]
    assert loaded.get_config()["teacher_combination"] == "per_teacher"
    assert float_logs(
        loaded.evaluate(X, Y, verbose=0, return_dict=True)
    ) == pytest.approx(logs)


@pytest.mark.parametrize("combination", ["average", "per_teacher"])
def test_each_teacher_runs_once_per_step(combination):
    counters = [CallCounter(name="c1"), CallCounter(name="c2")]
    teachers = [mlp(16, "t1", counters[0]), mlp(8, "t2", counters[1])]
    distiller = kd.Distiller(
        teachers,
        mlp(4, "student"),
        losses(),
        teacher_weights=[1.0, 2.0],
        teacher_combination=combination,
    )
    assert distiller.teachers == teachers
    assert all(not t.trainable for t in teachers)
    distiller.compile("adam", SPARSE_CE)
    history = distiller.fit(X, Y, epochs=1, batch_size=8, verbose=0).history  # 4 steps
    assert [float(c.calls.numpy()) for c in counters] == [4.0, 4.0]
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"teacher_weights": [1.0]}, ValueError, "one weight per teacher"),
        ({"teacher_weights": [1.0, -1.0]}, ValueError, ">= 0"),
        ({"teacher_weights": [0.0, 0.0]}, ValueError, "positive sum"),
        ({"teacher_combination": "vote"}, ValueError, "per_teacher"),
        (
            {"teacher": [mlp(16, "t1"), "t2"]},
            TypeError,
            "teacher 1 to be a `keras.Model`",
        ),
        (
            {"teacher": [mlp(16, "t1"), mlp(8, "t2", hidden=7)]},
            ValueError,
            r"\(5,\) and a student.*Received \(7,\)",
        ),
        (
            {
                "teacher": [mlp(16, "t1"), mlp(8, "t2", hidden=7)],
                "distillation_losses": kd.FeatureDistillation(
                    "pkt", "hidden", "hidden"
                ),
            },
            ValueError,
            "layer 'hidden' to have the same shape to average",
        ),
    ],
)
def test_bad_input(kwargs, error, match):
    arguments = {
        "teacher": [mlp(16, "t1"), mlp(8, "t2")],
        "student": mlp(4, "student"),
        "distillation_losses": losses(),
        **kwargs,
    }
    with pytest.raises(error, match=match):
        kd.Distiller(**arguments)


def test_per_teacher_refuses_features_of_different_shapes_for_one_adapter():
    teachers = [mlp(16, "t1"), mlp(8, "t2", hidden=7)]
    with pytest.raises(
        ValueError, match="Tap layers of the same shape in every teacher"
    ):
        kd.Distiller(
            teachers,
            mlp(4, "student", hidden=3),
            losses(),
            teacher_combination="per_teacher",
        )
