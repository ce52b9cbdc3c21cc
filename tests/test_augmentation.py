"""`Distiller(augmentation=..., mixing=...)`: one augmented view per
training step, fed to the teacher and the student; none in evaluation or
prediction; saved with the Distiller, never part of the student."""

import os

import keras
import numpy as np
import pytest
from conftest import as_numpy
from conftest import float_logs

import kerasdistill as kd

RNG = np.random.default_rng(2)
X = RNG.normal(size=(32, 6)).astype("float32")
IMAGES = RNG.uniform(size=(16, 4, 4, 1)).astype("float32")
ONE_HOT = keras.utils.to_categorical(RNG.integers(0, 3, 16), 3).astype("float32")


def identity(name, trainable=True):
    """A model that returns its inputs (an identity Dense)."""
    inputs = keras.Input((6,), name=f"{name}_input")
    layer = keras.layers.Dense(6, kernel_initializer="identity", name=f"{name}_dense")
    model = keras.Model(inputs, layer(inputs), name=name)
    model.trainable = trainable
    return model


class AbsoluteDifference(kd.DistillationLoss):
    def call(self, teacher_outputs, student_outputs):
        return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs), -1)


def identity_distiller(augmentation):
    distiller = kd.Distiller(
        identity("teacher"),
        identity("student"),
        AbsoluteDifference(),
        augmentation=augmentation,
    )
    # lr 0: both networks stay the identity; the student's loss against
    # y = x measures the augmentation, the distillation loss whether the
    # teacher saw the same view.
    distiller.compile(keras.optimizers.SGD(0.0), loss="mse")
    return distiller


def test_teacher_and_student_see_the_same_view_only_in_training():
    distiller = identity_distiller(keras.layers.GaussianNoise(1.0, seed=3))
    logs = distiller.fit(X, X, epochs=2, batch_size=8, verbose=0).history
    assert min(logs["student_loss"]) > 0.5  # the student saw noisy inputs
    assert max(logs["distillation_loss"]) == pytest.approx(0.0, abs=1e-6)  # same view
    evaluation = float_logs(distiller.evaluate(X, X, verbose=0, return_dict=True))
    assert evaluation["student_loss"] == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(distiller.predict(X, verbose=0), X, atol=1e-6)


@pytest.mark.slow  # about 30 s on JAX (compiling the image transforms)
def test_image_augmentation_trains_on_each_backend():
    def convnet(name, width):
        inputs = keras.Input((4, 4, 1))
        hidden = keras.layers.Dense(width, activation="relu")(
            keras.layers.Flatten()(inputs)
        )
        return keras.Model(inputs, keras.layers.Dense(3)(hidden), name=name)

    augmentation = keras.Sequential(
        [
            keras.layers.RandomTranslation(0.25, 0.25, seed=1),
            keras.layers.RandomFlip("horizontal", seed=2),
        ]
    )
    distiller = kd.Distiller(
        convnet("teacher", 8),
        convnet("student", 4),
        kd.LogitsDistillation(),
        augmentation=augmentation,
    )
    distiller.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    history = distiller.fit(IMAGES, ONE_HOT, epochs=2, batch_size=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert augmentation not in distiller.student.layers


class SoftLabelMean(keras.metrics.MeanMetricWrapper):
    """The mean of each label's largest entry: 1 for one-hot labels, below 1
    for mixed ones."""

    def __init__(self, name="label_peak", **kwargs):
        super().__init__(
            lambda y_true, y_pred: keras.ops.max(y_true, axis=-1), name=name, **kwargs
        )


def image_models():
    def model(name):
        inputs = keras.Input((4, 4, 1))
        return keras.Model(
            inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)), name=name
        )

    return model("teacher"), model("student")


def test_mixup_mixes_the_labels_of_the_loss_and_the_metrics():
    teacher, student = image_models()
    distiller = kd.Distiller(
        teacher,
        student,
        kd.LogitsDistillation(),
        mixing=keras.layers.MixUp(1.0, seed=4),
    )
    distiller.compile(
        "adam",
        keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[SoftLabelMean()],
    )
    history = distiller.fit(IMAGES, ONE_HOT, epochs=2, batch_size=8, verbose=0).history
    assert max(history["label_peak"]) < 0.95  # the training labels were mixed
    evaluation = float_logs(
        distiller.evaluate(IMAGES, ONE_HOT, verbose=0, return_dict=True)
    )
    assert evaluation["label_peak"] == pytest.approx(1.0)


def test_mixing_with_integer_labels_is_refused_before_training():
    teacher, student = image_models()
    distiller = kd.Distiller(
        teacher, student, kd.LogitsDistillation(), mixing=keras.layers.CutMix(seed=1)
    )
    distiller.compile("adam", "sparse_categorical_crossentropy")
    before = [as_numpy(w) for w in student.weights]
    with pytest.raises(
        ValueError, match="one-hot or soft labels.*student_loss_weight=0"
    ):
        distiller.fit(IMAGES, np.argmax(ONE_HOT, -1), epochs=1, verbose=0)
    for old, new in zip(before, student.weights):
        np.testing.assert_array_equal(old, as_numpy(new))


@pytest.mark.slow  # about 11 s on JAX (compiling CutMix)
def test_mixing_without_labels_leaves_the_student_loss_out():
    """The student learns from the teacher alone on the mixed inputs."""
    teacher, student = image_models()
    distiller = kd.Distiller(
        teacher,
        student,
        kd.LogitsDistillation(),
        student_loss_weight=0.0,
        mixing=keras.layers.CutMix(seed=1),
    )
    distiller.compile("adam")
    history = distiller.fit(IMAGES, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and "student_loss" not in history


def test_augmentation_round_trips_and_stays_out_of_the_student(tmp_path):
    distiller = identity_distiller(keras.layers.GaussianNoise(0.5, seed=3))
    distiller.fit(X, X, epochs=1, batch_size=16, verbose=0)
    config = distiller.get_config()
    assert config["augmentation"]["class_name"] == "GaussianNoise"
    assert config["mixing"] is None
    path = os.path.join(tmp_path, "distiller.keras")
    distiller.save(path)
    restored = keras.models.load_model(
        path, custom_objects={"AbsoluteDifference": AbsoluteDifference}
    )
    assert isinstance(restored.augmentation, keras.layers.GaussianNoise)
    assert restored.augmentation.stddev == 0.5
    assert all("gaussian" not in layer.name for layer in restored.student.layers)
    student_path = os.path.join(tmp_path, "student.keras")
    restored.student.save(student_path)
    reloaded = keras.models.load_model(student_path)
    assert [layer.name for layer in reloaded.layers] == [
        layer.name for layer in distiller.student.layers
    ]
    np.testing.assert_allclose(reloaded.predict(X, verbose=0), X, atol=1e-6)


@pytest.mark.tensorflow_only(reason="exports a SavedModel")
def test_export_holds_the_student_without_augmentation(tmp_path):
    distiller = identity_distiller(keras.layers.GaussianNoise(1.0, seed=3))
    distiller.fit(X, X, epochs=1, batch_size=16, verbose=0)
    report = kd.export_student(
        distiller, os.path.join(tmp_path, "student"), sample_inputs=X
    )
    assert report.max_abs_diff < 1e-5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"augmentation": "flip"}, TypeError, "Keras layer or model"),
        (
            {"augmentation": keras.Sequential([keras.layers.MixUp()])},
            ValueError,
            "as `mixing=`",
        ),
        (
            {"augmentation": keras.layers.RandomTranslation(0.1, 0.1)},
            ValueError,
            "accept the student's inputs",
        ),
        (
            {"augmentation": keras.layers.Dense(3)},
            ValueError,
            "shape the student takes",
        ),
        ({"mixing": keras.layers.RandomFlip()}, TypeError, "MixUp"),
        ({"mixing": keras.layers.CutMix()}, ValueError, "image inputs"),
    ],
)
def test_bad_augmentation_is_refused_with_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        kd.Distiller(
            identity("teacher"), identity("student"), AbsoluteDifference(), **kwargs
        )


def test_augmentation_with_cached_teacher_outputs_is_refused():
    distiller = identity_distiller(keras.layers.GaussianNoise(1.0))
    cached = kd.cache_teacher_outputs(
        distiller.teacher, X, distiller.distillation_losses, batch_size=8
    )
    with pytest.raises(ValueError, match="teacher must see the augmented view"):
        distiller.fit(cached, epochs=1, verbose=0)


def signal_models(length=40):
    def model(name, width):
        inputs = keras.Input((length, 1), name=f"{name}_input")
        hidden = keras.layers.Conv1D(width, 5, activation="relu")(inputs)
        pooled = keras.layers.GlobalAveragePooling1D()(hidden)
        return keras.Model(inputs, keras.layers.Dense(3)(pooled), name=name)

    return model("teacher", 8), model("student", 4)


@pytest.mark.parametrize("rank", [2, 3])
def test_mixup_mixes_inputs_of_any_rank(rank):
    """Signals (batch, 40, 1) and tabular rows (batch, 6): MixUp's convex
    combination, with its Beta weights, of the inputs and the labels."""
    signals = RNG.normal(size=(16, 40, 1)).astype("float32")
    x = signals if rank == 3 else X[:16]
    teacher, student = (
        signal_models()
        if rank == 3
        else (identity("teacher", False), identity("student"))
    )
    mixing = keras.layers.MixUp(0.4, seed=5)
    view = kd.augmentation.TrainingView(None, mixing, student)
    mixed, transformation = view.make(keras.ops.convert_to_tensor(x))
    weight = keras.ops.convert_to_numpy(transformation["mix_weight"])
    order = keras.ops.convert_to_numpy(transformation["permutation_order"])
    shape = (-1,) + (1,) * (rank - 1)
    expected = weight.reshape(shape) * x + (1 - weight.reshape(shape)) * x[order]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mixed), expected, atol=1e-5)
    if rank == 3:
        distiller = kd.Distiller(
            teacher, student, kd.LogitsDistillation(), mixing=mixing
        )
        distiller.compile(
            "adam",
            keras.losses.CategoricalCrossentropy(from_logits=True),
            metrics=[SoftLabelMean()],
        )
        history = distiller.fit(x, ONE_HOT, epochs=2, batch_size=8, verbose=0).history
        assert max(history["label_peak"]) < 0.95  # the labels were mixed
        evaluation = float_logs(
            distiller.evaluate(x, ONE_HOT, verbose=0, return_dict=True)
        )
        assert evaluation["label_peak"] == pytest.approx(1.0)  # not in evaluation


def test_mixing_token_ids_is_refused():
    inputs = keras.Input((8,), dtype="int32")
    embedded = keras.layers.Embedding(20, 4)(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    teacher = keras.Model(inputs, keras.layers.Dense(3)(pooled), name="teacher")
    student = keras.Model(inputs, keras.layers.Dense(3)(pooled), name="student")
    with pytest.raises(ValueError, match="token ids"):
        kd.augmentation.TrainingView(None, keras.layers.MixUp(), student)
    del teacher


def test_dkd_reads_the_target_class_of_mixed_labels_as_their_largest_share():
    rng = np.random.default_rng(3)
    teacher_logits = rng.normal(size=(8, 5)).astype("float32")
    student_logits = rng.normal(size=(8, 5)).astype("float32")
    first, second = rng.integers(0, 5, 8), rng.integers(0, 5, 8)
    share = rng.uniform(0.0, 1.0, 8).astype("float32")[:, None]
    mixed = share * np.eye(5)[first] + (1 - share) * np.eye(5)[second]
    target = np.where(share[:, 0] >= 0.5, first, second)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(
            kd.losses.decoupled_kd(teacher_logits, student_logits, mixed)
        ),
        keras.ops.convert_to_numpy(
            kd.losses.decoupled_kd(teacher_logits, student_logits, target)
        ),
        rtol=1e-5,
    )
