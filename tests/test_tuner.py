"""DistillerHyperModel: real KerasTuner searches around one shared teacher."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import gc  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kerasdistill as kd  # noqa: E402
from kerasdistill.deploy.trial import TrialDistiller  # noqa: E402

kt = pytest.importorskip("keras_tuner")  # The `tuner` extra.

FEATURES, CLASSES, TEACHER_WIDTH = 6, 3, 64
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(width, name):
    inputs = keras.Input((FEATURES,), name=f"{name}_input")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(inputs)
    outputs = keras.layers.Dense(CLASSES, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def _build_student(hp):
    return _mlp(hp.Int("width", 4, 16, step=4), "student")


@pytest.fixture(autouse=True, scope="module")
def _cheap_garbage_collection():
    """KerasTuner runs `gc.collect()` twice per trial; in a process holding
    TensorFlow each run walks a large heap (about 1 s here). Freezing the
    objects that exist before the searches makes the collections cheap."""
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, FEATURES)).astype("float32")
    y = np.argmax(x[:, :CLASSES], axis=1).astype("int32")
    return (x[:64], y[:64]), (x[64:], y[64:])


@pytest.fixture(scope="module")
def teacher(data):
    keras.utils.set_random_seed(0)
    (x, y), _ = data
    teacher = _mlp(TEACHER_WIDTH, "teacher")
    teacher.compile(optimizer="adam", loss=LOSS)
    teacher.fit(x, y, epochs=5, verbose=0)
    return teacher


def _hypermodel(teacher, **kwargs):
    kwargs.setdefault("loss", LOSS)
    kwargs.setdefault("metrics", ["accuracy"])
    return kd.DistillerHyperModel(teacher, _build_student, **kwargs)


def _search(tuner, data, epochs=2):
    (x, y), validation = data
    tuner.search(
        x, y, validation_data=validation, epochs=epochs, batch_size=32, verbose=0
    )


def _dataset_shapes(path):
    shapes = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda _, obj: (
                shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return shapes


def _assert_teacher_untouched(teacher, before):
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_random_search_shares_the_teacher(teacher, data, tmp_path):
    before = teacher.get_weights()
    tuner = kt.RandomSearch(
        _hypermodel(teacher),
        objective="val_accuracy",
        max_trials=2,
        seed=1,
        directory=tmp_path,
        project_name="random",
    )
    _search(tuner, data)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2
    for trial in trials:
        values = trial.hyperparameters.values
        assert 0.1 <= values["alpha"] <= 0.9
        assert 1.0 <= values["temperature"] <= 8.0
        # The checkpoint holds the student side only: no teacher tensor.
        shapes = _dataset_shapes(tuner._get_checkpoint_fname(trial.trial_id))
        assert (values["width"], CLASSES) in shapes
        assert not any(TEACHER_WIDTH in shape for shape in shapes)
    assert trials[0].hyperparameters.values != trials[1].hyperparameters.values

    best = tuner.get_best_models(1)[0]
    assert isinstance(best, kd.Distiller) and best.teacher is teacher
    _assert_teacher_untouched(teacher, before)
    assert best.student_loss_weight.numpy() == pytest.approx(
        trials[0].hyperparameters.values["alpha"]
    )
    assert best.distillation_losses[0].temperature.numpy() == pytest.approx(
        trials[0].hyperparameters.values["temperature"]
    )
    # The best checkpoint is loaded: its validation accuracy is the score.
    _, (x_val, y_val) = data
    logs = best.evaluate(x_val, y_val, verbose=0, return_dict=True)
    assert logs["accuracy"] == pytest.approx(trials[0].score)
    # The best student ships alone.
    report = kd.export_student(
        best, tmp_path / "best.tflite", format="tflite", sample_inputs=x_val
    )
    assert report.top1_agreement == 1.0 and report.relative_diff < 1e-5


def test_bayesian_val_student_loss_ranks_trials(teacher, data, tmp_path):
    tuner = kt.BayesianOptimization(
        _hypermodel(teacher, temperature=[2.0, 4.0]),
        objective=kt.Objective("val_student_loss", direction="min"),
        max_trials=2,
        num_initial_points=1,
        seed=2,
        directory=tmp_path,
        project_name="bayes",
    )
    _search(tuner, data)
    assert len(tuner.oracle.trials) == 2
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best_trial.hyperparameters.values["temperature"] in (2.0, 4.0)
    best = tuner.get_best_models(1)[0]
    assert (
        best.student.get_layer("student_hidden").units
        == (best_trial.hyperparameters.values["width"])
    )
    # val_student_loss is the student's own loss, as the student alone
    # reports it; val_loss is the distillation objective, as in a Distiller.
    _, (x_val, y_val) = data
    student = best.student
    student.compile(loss=LOSS)
    alone = student.evaluate(x_val, y_val, verbose=0)
    assert alone == pytest.approx(best_trial.score, rel=1e-5)
    logs = best.evaluate(x_val, y_val, verbose=0, return_dict=True)
    assert float(logs["student_loss"]) == pytest.approx(alone, rel=1e-5)
    assert float(logs["loss"]) == pytest.approx(float(logs["total_loss"]))


@pytest.mark.slow
def test_hyperband_continues_trials_from_student_checkpoints(teacher, data, tmp_path):
    before = teacher.get_weights()
    tuner = kt.Hyperband(
        _hypermodel(teacher, alpha=[0.25, 0.75], temperature=(1.0, 4.0)),
        objective="val_accuracy",
        max_epochs=2,
        factor=2,
        hyperband_iterations=1,
        seed=3,
        directory=tmp_path,
        project_name="hb",
    )
    _search(tuner, data)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) >= 2
    # A second-round trial starts from a first-round trial's checkpoint.
    assert any("tuner/trial_id" in t.hyperparameters.values for t in trials)
    best = tuner.get_best_models(1)[0]
    assert best.teacher is teacher
    _assert_teacher_untouched(teacher, before)


def test_resuming_a_search(teacher, data, tmp_path):
    class Counting(kd.DistillerHyperModel):
        fits = 0

        def fit(self, hp, model, *args, **kwargs):
            type(self).fits += 1
            return super().fit(hp, model, *args, **kwargs)

    def tuner(teacher, max_trials):
        return kt.RandomSearch(
            Counting(teacher, _build_student, loss=LOSS, metrics=["accuracy"]),
            objective="val_accuracy",
            max_trials=max_trials,
            seed=4,
            directory=tmp_path / "runs",
            project_name="resume",
            overwrite=False,
        )

    first = tuner(teacher, 1)
    _search(first, data)
    (first_trial,) = first.oracle.trials.values()
    assert Counting.fits == 1

    # As in a new process: the teacher is loaded again from its file.
    teacher.save(tmp_path / "teacher.keras")
    reloaded = keras.saving.load_model(tmp_path / "teacher.keras")
    resumed = tuner(reloaded, 2)  # Same directory: reloads the oracle.
    _search(resumed, data)
    assert Counting.fits == 2  # Only the new trial ran.
    trials = resumed.oracle.get_best_trials(2)
    assert len(trials) == 2
    assert resumed.oracle.trials[first_trial.trial_id].score == first_trial.score
    # Each trial's best student is restored from its checkpoint.
    _, (x_val, y_val) = data
    for model, trial in zip(resumed.get_best_models(2), trials):
        assert model.teacher is reloaded
        logs = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
        assert logs["accuracy"] == pytest.approx(trial.score)


def test_trial_checkpoint_leaves_the_teacher_out(teacher, data, tmp_path):
    (x, y), _ = data
    keras.utils.set_random_seed(5)
    distiller = TrialDistiller(teacher, _mlp(8, "student"), kd.LogitsDistillation())
    distiller.compile(optimizer="adam", loss=LOSS)
    distiller.fit(x, y, epochs=1, verbose=0)

    student_side = tmp_path / "trial.weights.h5"
    distiller.save_weights(student_side)
    full = tmp_path / "full.weights.h5"
    keras.saving.save_weights(distiller, full)  # What a Distiller writes.
    teacher_floats = teacher.count_params()
    assert full.stat().st_size - student_side.stat().st_size > 4 * teacher_floats
    assert not any(TEACHER_WIDTH in s for s in _dataset_shapes(student_side))

    other = TrialDistiller(teacher, _mlp(8, "student"), kd.LogitsDistillation())
    other.compile(optimizer="adam", loss=LOSS)
    other.optimizer.build(other.trainable_variables)
    before = teacher.get_weights()
    other.load_weights(student_side)
    for a, b in zip(distiller.student.get_weights(), other.student.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(distiller.optimizer.variables, other.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _assert_teacher_untouched(teacher, before)


def test_trial_distiller_round_trips(teacher, data, tmp_path):
    (x, y), _ = data
    distiller = TrialDistiller(
        teacher,
        _mlp(4, "student"),
        kd.LogitsDistillation(2.5),
        student_loss_weight=0.3,
    )
    distiller.compile(optimizer="adam", loss=LOSS)
    distiller.fit(x, y, epochs=1, verbose=0)
    restored = TrialDistiller.from_config(distiller.get_config())
    assert isinstance(restored, TrialDistiller)
    assert restored.student_loss_weight.numpy() == pytest.approx(0.3)
    path = tmp_path / "trial.keras"
    distiller.save(path)  # A complete file: the teacher is in it.
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, TrialDistiller)
    np.testing.assert_allclose(
        loaded.teacher.predict(x, verbose=0), teacher.predict(x, verbose=0)
    )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-6
    )


def test_build_with_fixed_values_and_a_model_student(teacher):
    student = _mlp(4, "student")
    hypermodel = kd.DistillerHyperModel(
        teacher,
        student,
        distillation_losses=[kd.LogitsDistillation(), kd.RegressionDistillation()],
        alpha=0.3,
        temperature={"min_value": 1.0, "max_value": 16.0, "sampling": "log"},
        distillation_loss_weights=[1.0, (0.0, 2.0)],
        optimizer=keras.optimizers.SGD(0.1),
        loss=LOSS,
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    hp = kt.HyperParameters()
    first = hypermodel.build(hp)
    second = hypermodel.build(hp)
    assert set(hp.values) == {
        "alpha",
        "temperature",
        "distillation_loss_weight_0",
        "distillation_loss_weight_1",
    }
    assert hp.values["alpha"] == 0.3
    assert first.student is not student and first.student is not second.student
    assert first.teacher is teacher and second.teacher is teacher
    assert first.optimizer is not second.optimizer
    assert isinstance(first.optimizer, keras.optimizers.SGD)
    assert first.distillation_losses[0] is not second.distillation_losses[0]
    assert first.distillation_losses[0].temperature.numpy() == pytest.approx(
        hp.values["temperature"]
    )
    assert [w.numpy() for w in first.distillation_loss_weights] == pytest.approx(
        [1.0, hp.values["distillation_loss_weight_1"]]
    )


def test_keras_distillation_losses_are_accepted(teacher):
    hypermodel = _hypermodel(
        teacher,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=2.0),
        temperature=[3.0, 5.0],
    )
    hp = kt.HyperParameters()
    distiller = hypermodel.build(hp)
    (loss,) = distiller.distillation_losses
    assert isinstance(loss, kd.LogitsDistillation)
    assert loss.temperature.numpy() == hp.values["temperature"]


def test_losses_from_a_function_and_untuned_values(teacher):
    hypermodel = kd.DistillerHyperModel(
        teacher,
        _build_student,
        distillation_losses=lambda hp: kd.RegressionDistillation(
            hp.Choice("distance", ["mse", "mae"])
        ),
        alpha=None,
        temperature=None,
        loss=LOSS,
    )
    hp = kt.HyperParameters()
    distiller = hypermodel.build(hp)
    assert set(hp.values) == {"width", "distance"}
    assert distiller.distillation_losses[0].loss == hp.values["distance"]
    assert distiller.student_loss_weight.numpy() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"alpha": (0.5, 1.5)}, ValueError, r"alpha in \[0, 1\]"),
        ({"alpha": (0.6, 0.2)}, ValueError, "min_value < max_value"),
        ({"alpha": "high"}, TypeError, "search-space|a number, a"),
        ({"temperature": [2.0, -1.0]}, ValueError, "temperature > 0"),
        ({"temperature": {"max_value": 4.0}}, ValueError, "min_value"),
        ({"distillation_loss_weights": 2.0}, TypeError, "one search-space spec"),
        ({"distillation_loss_weights": [(-1.0, 1.0)]}, ValueError, ">= 0"),
    ],
)
def test_bad_search_space(teacher, kwargs, error, message):
    with pytest.raises(error, match=message):
        _hypermodel(teacher, **kwargs)


def test_bad_models_and_losses(teacher):
    with pytest.raises(TypeError, match="Expected the teacher"):
        kd.DistillerHyperModel("teacher.keras", _build_student)
    with pytest.raises(TypeError, match="function `student\\(hp\\)`"):
        kd.DistillerHyperModel(teacher, "student")
    with pytest.raises(TypeError, match="to return a keras.Model"):
        kd.DistillerHyperModel(teacher, lambda hp: None).build(kt.HyperParameters())
    with pytest.raises(ValueError, match="returned the teacher"):
        kd.DistillerHyperModel(teacher, lambda hp: teacher).build(kt.HyperParameters())
    shared = _mlp(4, "shared")
    reusing = kd.DistillerHyperModel(teacher, lambda hp: shared, loss=LOSS)
    reusing.build(kt.HyperParameters())
    with pytest.raises(ValueError, match="a model it returned before"):
        reusing.build(kt.HyperParameters())
    with pytest.raises(ValueError, match="with a temperature"):
        kd.DistillerHyperModel(
            teacher,
            _build_student,
            distillation_losses=kd.RegressionDistillation(),
            loss=LOSS,
        ).build(kt.HyperParameters())
    with pytest.raises(ValueError, match="one distillation loss weight spec"):
        _hypermodel(teacher, distillation_loss_weights=[1.0, 2.0]).build(
            kt.HyperParameters()
        )


def test_import_without_keras_tuner(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # Not installed.
    monkeypatch.delitem(sys.modules, "kerasdistill.deploy.tuner")
    try:
        importlib.reload(kd)  # `import kerasdistill` must not need it.
        assert "DistillerHyperModel" not in kd.__all__
        assert callable(kd.export_student)
        with pytest.raises(ImportError, match=r"pip install 'kerasdistill\[tuner\]'"):
            kd.DistillerHyperModel
    finally:
        monkeypatch.undo()
        importlib.reload(kd)
    assert "DistillerHyperModel" in kd.__all__
    assert kd.DistillerHyperModel is kd.deploy.tuner.DistillerHyperModel
