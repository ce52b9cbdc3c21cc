"""FeatureDistillation in a Distiller: adapters (built, trained, saved, never
in the student), nested taps in one pass, the feature-returning convention,
and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BACKEND
from conftest import float_logs
from test_distiller import SPARSE_CE
from test_distiller import CallCounter

import kerasdistill as kd
from kerasdistill.losses import adapters

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 3, size=32).astype("int32")


def cnn(widths, name, counter=None, nested=False):
    """Conv blocks `block{k}_out` (8x8 -> 4x4 -> 2x2), then logits; the
    blocks inside a nested `backbone` model when `nested`."""
    inputs = keras.Input((8, 8, 1))
    h = counter(inputs) if counter is not None else inputs
    for k, width in enumerate(widths, 1):
        h = keras.layers.Conv2D(
            width, 3, padding="same", activation="relu", name=f"conv{k}"
        )(h)
        h = keras.layers.MaxPooling2D(name=f"block{k}_out")(h)
    if nested:
        backbone = keras.Model(inputs, h, name="backbone")
        inputs = keras.Input((8, 8, 1))
        h = backbone(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name=name)


@pytest.mark.parametrize(
    "student, teacher, loss, layers",
    [
        ((6,), (10,), "mse", ["Dense"]),
        ((5, 3), (5, 7), "cosine", ["Conv1D"]),
        ((4, 4, 3), (4, 4, 8), "mse", ["Conv2D"]),
        ((8, 8, 3), (4, 4, 8), "mse", ["AveragePooling2D", "Conv2D"]),
        ((3, 3, 3), (4, 4, 8), "mse", ["Resizing", "Conv2D"]),
        ((8, 8, 3), (4, 4, 8), "attention_transfer", ["AveragePooling2D"]),
        ((8, 8, 3), (4, 4, 8), "gram", ["Conv2D"]),
        ((8, 8, 3), (10,), "similarity_preserving", None),
        ((4, 4, 8), (4, 4, 8), "mse", None),
    ],
)
def test_auto_adapter_maps_what_the_loss_compares(student, teacher, loss, layers):
    loss_object = kd.FeatureDistillation(loss)
    teacher_x = RNG.normal(size=(4, *teacher)).astype("float32")
    student_x = RNG.normal(size=(4, *student)).astype("float32")
    value = float(
        loss_object.compute_loss(teacher_x, student_x)
    )  # built lazily, eagerly
    assert np.isfinite(value)
    if layers is None:
        assert loss_object.adapter is None
        return
    assert [type(layer).__name__ for layer in loss_object.adapter.layers] == layers
    adapted = loss_object.adapter(student_x).shape[1:]
    assert not adapters.mismatch(tuple(adapted), teacher, loss_object._match)


def test_batchnorm_option_and_what_auto_cannot_map():
    adapter = adapters.build_adapter((4, 4, 3), (4, 4, 8), "shape", True, "a")
    assert [type(layer).__name__ for layer in adapter.layers] == [
        "Conv2D",
        "BatchNormalization",
    ]
    with pytest.raises(ValueError, match="ranks differ.*Pass your own `adapter=`"):
        adapters.build_adapter((4, 4, 3), (10,), "shape", False, "a")
    with pytest.raises(ValueError, match="lengths differ"):
        adapters.build_adapter((5, 3), (6, 3), "shape", False, "a")


def test_adapter_batchnorm_only_after_a_convolution_and_never_ignored():
    dense = adapters.build_adapter((6,), (10,), "shape", False, "a")
    assert [type(layer).__name__ for layer in dense.layers] == ["Dense"]
    with pytest.raises(
        ValueError, match="adapter_batchnorm=True only where.*a Dense layer"
    ):
        adapters.build_adapter((6,), (10,), "shape", True, "a")
    same_shapes = kd.FeatureDistillation(
        "mse", "block1_out", "block1_out", adapter_batchnorm=True
    )
    with pytest.raises(ValueError, match="not needed"):
        kd.Distiller(cnn([4, 16], "teacher"), cnn([4, 8], "student"), same_shapes)
    for adapter in (None, keras.layers.Dense(3)):
        with pytest.raises(
            ValueError, match="adapter_batchnorm=True only with adapter='auto'"
        ):
            kd.FeatureDistillation("mse", adapter=adapter, adapter_batchnorm=True)


def test_validation_checks_only_and_build_for_builds_the_adapter():
    teacher, student = cnn([8, 16], "teacher"), cnn([4, 8], "student")
    hint = kd.FeatureDistillation("mse", "block2_out", "block1_out")
    hint.validate_model_compatibility(teacher, student)
    assert hint.adapter is None
    hint.build_for(teacher, student)
    assert [type(layer).__name__ for layer in hint.adapter.layers] == [
        "AveragePooling2D",
        "Conv2D",
    ]
    adapter = hint.adapter
    hint.prepare(teacher, student)  # a second teacher of the same shapes
    assert hint.adapter is adapter
    with pytest.raises(ValueError, match="set up .* for a teacher feature of shape"):
        hint.prepare(cnn([8, 32], "other"), student)


def test_adapter_trains_with_the_student_is_saved_and_never_in_the_student(tmp_path):
    teacher_counter, student_counter = (
        CallCounter(name="t_count"),
        CallCounter(name="s_count"),
    )
    teacher = cnn([8, 16], "teacher", teacher_counter, nested=True)
    student = cnn([4, 8], "student", student_counter)
    hint = kd.FeatureDistillation(
        "mse", "backbone/block2_out", "block1_out", adapter_batchnorm=True
    )
    attention = kd.FeatureDistillation("attention_transfer", "block1_out", "block1_out")
    distiller = kd.Distiller(
        teacher, student, [kd.LogitsDistillation(), hint, attention]
    )
    assert [type(layer).__name__ for layer in hint.adapter.layers] == [
        "AveragePooling2D",
        "Conv2D",
        "BatchNormalization",
    ]  # built eagerly
    assert attention.adapter is None  # attention maps ignore channels
    adapter_variables = {id(v) for v in hint.adapter.trainable_variables}
    assert adapter_variables <= {id(v) for v in distiller.trainable_variables}
    assert not adapter_variables & {id(v) for v in student.weights}
    student_weights = len(student.weights)

    distiller.compile("adam", SPARSE_CE)
    kernel = hint.adapter.layers[1].kernel.numpy().copy()
    moving_mean = hint.adapter.layers[2].moving_mean.numpy().copy()
    teacher_counter.training_flags.clear()
    distiller.fit(X, Y, epochs=1, batch_size=16, verbose=0)  # 2 steps
    assert float(teacher_counter.calls.numpy()) == 2
    assert float(student_counter.calls.numpy()) == 2
    assert teacher_counter.training_flags == {False}
    assert not np.allclose(kernel, hint.adapter.layers[1].kernel.numpy())
    trained_mean = hint.adapter.layers[2].moving_mean.numpy().copy()
    assert not np.allclose(moving_mean, trained_mean)  # batch norm in training mode
    logs = distiller.evaluate(X, Y, verbose=0, return_dict=True)
    np.testing.assert_array_equal(
        trained_mean, hint.adapter.layers[2].moving_mean.numpy()
    )

    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(
        tmp_path / "d.keras", custom_objects={"CallCounter": CallCounter}
    )
    for original, restored in zip(
        hint.adapter.weights, loaded.distillation_losses[1].adapter.weights
    ):
        np.testing.assert_array_equal(original.numpy(), restored.numpy())
    assert float_logs(
        loaded.evaluate(X, Y, verbose=0, return_dict=True)
    ) == pytest.approx(float_logs(logs))
    assert len(student.weights) == student_weights
    student.save(tmp_path / "student.keras")
    restored_student = keras.saving.load_model(
        tmp_path / "student.keras", custom_objects={"CallCounter": CallCounter}
    )
    assert len(restored_student.weights) == student_weights


def test_custom_adapter_layer_is_used_and_its_shape_checked(tmp_path):
    teacher, student = cnn([8, 16], "teacher"), cnn([4, 8], "student")
    adapter = keras.Sequential(
        [keras.layers.Conv2D(16, 1), keras.layers.MaxPooling2D()]
    )
    loss = kd.FeatureDistillation("mse", "block2_out", "block1_out", adapter=adapter)
    distiller = kd.Distiller(teacher, student, loss)
    assert loss.adapter is adapter and adapter.built
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(restored.adapter, keras.Sequential)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    for a, b in zip(adapter.weights, loaded.distillation_losses[0].adapter.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    wrong = kd.FeatureDistillation(
        "mse", "block2_out", "block1_out", adapter=keras.layers.Conv2D(16, 1)
    )
    with pytest.raises(ValueError, match=r"adapter to map.*\(4, 4, 4\).*\(4, 4, 16\)"):
        kd.Distiller(teacher, student, wrong)


class FeatureStudent(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(3)

    def call(self, x, training=None, return_features=False):
        h = self.conv(x)
        outputs = self.head(self.pool(h))
        return (outputs, {"conv": h}) if return_features else outputs


def test_subclassed_student_with_the_feature_returning_convention():
    teacher = cnn([8, 16], "teacher")
    unbuilt = kd.Distiller(
        teacher, FeatureStudent(), kd.FeatureDistillation("mse", "conv1", "conv")
    )
    unbuilt.compile("adam", SPARSE_CE)
    if BACKEND == "torch":
        # Keras's PyTorch trainer builds the loss eagerly on a batch before
        # it builds the optimizer, so the adapter is made in time and trains.
        unbuilt.fit(X, Y, epochs=1, verbose=0)
        assert unbuilt.distillation_losses[0].adapter.trainable_weights
    else:
        with pytest.raises(
            ValueError, match="Call the teacher and the student on a batch"
        ):
            unbuilt.fit(X, Y, epochs=1, verbose=0)
    student = FeatureStudent()
    student(X[:1])
    loss = kd.FeatureDistillation("mse", "conv1", "conv")
    distiller = kd.Distiller(teacher, student, loss)
    assert type(loss.adapter.layers[0]).__name__ == "Conv2D"
    distiller.compile("adam", SPARSE_CE)
    history = distiller.fit(X, Y, epochs=2, batch_size=16, verbose=0).history
    assert history["distillation_loss"][1] < history["distillation_loss"][0]


def test_feature_distillation_config_round_trip():
    for loss in [
        kd.FeatureDistillation("pkt", "a", "b", adapter=None),
        kd.FeatureDistillation(
            "rkd_angle", "backbone/a", "b", adapter="auto", adapter_batchnorm=True
        ),
        kd.FeatureDistillation(
            keras.losses.Huber(), "a", "b", adapter=keras.layers.Dense(3)
        ),
    ]:
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(loss)
        )
        assert type(restored) is kd.FeatureDistillation
        assert restored.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "loss, error, match",
    [
        (
            lambda: kd.FeatureDistillation(
                "mse", "block2_out", "block1_out", adapter=None
            ),
            ValueError,
            r"same shape with adapter=None.*\(2, 2, 16\).*\(4, 4, 4\).*adapter='auto'",
        ),
        (
            lambda: kd.FeatureDistillation(
                "attention_transfer", "block2_out", "block1_out", adapter=None
            ),
            ValueError,
            "same positions",
        ),
        (
            lambda: kd.FeatureDistillation("mse", "block2_ot", "block1_out"),
            ValueError,
            r"Did you mean \['block2_out'",
        ),
        (
            lambda: kd.FeatureDistillation("mse", None, "block1_out"),
            ValueError,
            "ranks differ",
        ),
        (
            lambda: kd.FeatureDistillation(
                "mse", "block1_out", "block1_out", adapter="linear"
            ),
            TypeError,
            "adapter",
        ),
        (
            lambda: kd.FeatureDistillation("no_such_loss"),
            ValueError,
            "similarity_preserving",
        ),
    ],
    ids=[
        "no-adapter",
        "no-adapter-attention",
        "unknown-name",
        "rank",
        "bad-adapter",
        "bad-loss",
    ],
)
def test_bad_input_raises_before_training(loss, error, match):
    with pytest.raises(error, match=match):
        kd.Distiller(cnn([8, 16], "teacher"), cnn([4, 8], "student"), loss())


def test_relational_losses_refuse_a_batch_of_one_in_fit():
    relational = [
        kd.FeatureDistillation(name, "block2_out", "block1_out")
        for name in ("similarity_preserving", "rkd_distance", "rkd_angle")
    ]
    distiller = kd.Distiller(
        cnn([8, 16], "teacher"),
        cnn([4, 8], "student"),
        [kd.LogitsDistillation(), *relational],
    )
    distiller.compile("adam", SPARSE_CE, jit_compile=False)
    with pytest.raises(
        (ValueError, tf.errors.InvalidArgumentError), match="needs a batch of at least"
    ):
        distiller.fit(X[:5], Y[:5], batch_size=4, epochs=1, verbose=0)  # 4 + 1
