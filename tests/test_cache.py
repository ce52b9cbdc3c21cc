"""Cached teacher outputs: the same training as on the fly without running
the teacher, labels / sample weights / features kept, disk reuse and its
checks, refusal of a cache built for another teacher or other taps,
evaluation without the teacher, augmentation warnings."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BACKEND
from conftest import CallCounter
from conftest import make_classifier

import kerasdistill as kd
from kerasdistill.data import randomness

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def counted_teacher(width=16, name="teacher"):
    """A classifier like conftest's, whose executions are counted."""
    inputs = keras.Input((6,))
    counter = CallCounter(name=f"{name}_counter")
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(
        counter(inputs)
    )
    outputs = keras.layers.Dense(3, name=f"{name}_logits")(hidden)
    return keras.Model(inputs, outputs, name=name), counter


def calls(counter):
    return float(counter.calls.numpy())


LOGITS_AND_HINT = [
    kd.LogitsDistillation(2.0),
    kd.FeatureDistillation("mse", "teacher_logits", "student_logits"),
]


def distiller_for(teacher, losses=None, seed=1, **kwargs):
    keras.utils.set_random_seed(seed)
    distiller = kd.Distiller(
        teacher,
        make_classifier(4, name="student"),
        losses or LOGITS_AND_HINT,
        **kwargs,
    )
    distiller.compile("sgd", SPARSE_CE, weighted_metrics=["accuracy"])
    return distiller


def test_cached_fit_equals_fit_on_the_fly_without_running_the_teacher(
    classification_data,
):
    x, y = classification_data
    sample_weight = np.linspace(0.1, 1.0, len(x)).astype("float32")
    teacher, counter = counted_teacher()
    on_the_fly = distiller_for(teacher)
    expected = on_the_fly.fit(
        x,
        y,
        sample_weight=sample_weight,
        batch_size=16,
        epochs=2,
        shuffle=False,
        verbose=0,
    ).history
    cached = kd.cache_teacher_outputs(
        teacher,
        (x, y, sample_weight),
        LOGITS_AND_HINT,
        batch_size=16,
        shuffle=False,
    )
    before = calls(counter)
    distiller = distiller_for(teacher)
    history = distiller.fit(cached, epochs=2, verbose=0).history
    assert calls(counter) == before  # the teacher never ran
    for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5)
    for a, b in zip(distiller.student.get_weights(), on_the_fly.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(  # predict / call read the inputs of a cached batch
        distiller.predict(cached, verbose=0),
        distiller.student.predict(x, verbose=0),
        rtol=1e-6,
    )


def test_format_shuffling_and_single_samples(classification_data):
    x, y = classification_data
    teacher, _ = counted_teacher()
    teacher_logits = teacher.predict(x, verbose=0)
    cached = kd.cache_teacher_outputs(teacher, (x, y), LOGITS_AND_HINT, batch_size=24)
    marker = kd.cache.marker_key(teacher)
    assert len(cached) == 3  # 24 + 24 + 16
    rows = {row.tobytes(): i for i, row in enumerate(x)}

    def read(batches):
        """The sample order of the batches, checked against the arrays."""
        assert [int(b[1].shape[0]) for b in batches] == [24, 24, 16]
        inputs = np.concatenate([np.asarray(b[0]["inputs"]) for b in batches])
        index = np.array([rows[row.tobytes()] for row in inputs])
        assert sorted(index) == list(range(len(x)))
        teacher_part = [b[0][marker] for b in batches]
        outputs = np.concatenate([np.asarray(t["outputs"]) for t in teacher_part])
        features = np.concatenate(
            [np.asarray(t["features"]["teacher_logits"]) for t in teacher_part]
        )
        np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[index])
        np.testing.assert_allclose(outputs, teacher_logits[index], rtol=1e-6)
        np.testing.assert_allclose(features, teacher_logits[index], rtol=1e-6)
        return index

    orders = []
    for _ in range(2):  # reshuffled at each epoch, rows kept together
        orders.append(read([cached[i] for i in range(len(cached))]))
        cached.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1])
    dataset = cached.as_dataset()  # the same batches through tf.data
    assert dataset.cardinality() == 3
    tf_orders = [read(list(dataset.as_numpy_iterator())) for _ in range(2)]
    assert not np.array_equal(*tf_orders)
    samples = kd.cache_teacher_outputs(teacher, x, batch_size=None)
    assert samples.cardinality() == len(x)
    assert set(samples.element_spec) == {marker, "inputs"}
    first = next(iter(samples))
    np.testing.assert_allclose(first[marker]["outputs"], teacher_logits[0], rtol=1e-6)


def test_transfer_set_and_float16_cache(classification_data):
    x, y = classification_data
    teacher, _ = counted_teacher()
    cached = kd.cache_teacher_outputs(teacher, x, batch_size=16, dtype="float16")
    marker = kd.cache.marker_key(teacher)
    assert cached.x[marker]["outputs"].dtype == np.float16
    distiller = distiller_for(teacher, kd.LogitsDistillation(2.0))
    history = distiller.fit(cached, epochs=3, verbose=0).history
    assert history["loss"] == pytest.approx(history["distillation_loss"])
    assert history["loss"][-1] < history["loss"][0]
    float32 = kd.cache_teacher_outputs(teacher, x, batch_size=64)
    assert distiller.evaluate(cached, verbose=0) == pytest.approx(
        distiller.evaluate(float32, verbose=0), rel=1e-3
    )


def test_float16_cache_mixed_precision_student_and_xla(classification_data):
    x, y = classification_data
    teacher, _ = counted_teacher()
    cached = kd.cache_teacher_outputs(
        teacher, (x, y), LOGITS_AND_HINT, batch_size=16, dtype="float16"
    )
    keras.config.set_dtype_policy("mixed_float16")
    student = make_classifier(4, name="student")
    keras.config.set_dtype_policy("float32")
    distiller = kd.Distiller(teacher, student, LOGITS_AND_HINT)
    # XLA on TensorFlow and JAX; on PyTorch jit_compile means torch.compile,
    # minutes to start on CPU.
    distiller.compile("adam", SPARSE_CE, jit_compile=BACKEND != "torch")
    history = distiller.fit(cached, epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


def test_disk_cache_is_reused_across_runs(tmp_path, classification_data):
    x, y = classification_data
    path = str(tmp_path / "cache")
    teacher, counter = counted_teacher()
    teacher.save(tmp_path / "teacher.keras")  # before it runs: its counter is a weight
    built = kd.cache_teacher_outputs(
        teacher, (x, y), LOGITS_AND_HINT, batch_size=16, shuffle=False, path=path
    )
    assert calls(counter) == 4
    # A new run: the same teacher loaded from a file, the same data.
    reloaded = keras.saving.load_model(
        tmp_path / "teacher.keras", custom_objects={"CallCounter": CallCounter}
    )
    reused = kd.cache_teacher_outputs(
        reloaded, (x, y), LOGITS_AND_HINT, batch_size=16, shuffle=False, path=path
    )
    assert calls(reloaded.get_layer("teacher_counter")) == 0  # not run again
    for a, b in zip(built, reused):
        keras.tree.map_structure(np.testing.assert_array_equal, a, b)
    samples = kd.cache_teacher_outputs(reloaded, (x, y), path=path, batch_size=None)
    assert samples.cardinality() == len(x)
    distiller = distiller_for(reloaded)
    distiller.fit(samples.batch(32), epochs=1, verbose=0)


def test_disk_cache_built_for_something_else_is_refused(tmp_path, classification_data):
    x, y = classification_data
    path = str(tmp_path / "cache")
    teacher, _ = counted_teacher()
    kd.cache_teacher_outputs(teacher, (x, y), kd.LogitsDistillation(), path=path)
    retrained, _ = counted_teacher()  # same name and size, other weights
    hint = kd.FeatureDistillation("mse", "teacher_hidden", "student_hidden")
    for call, match in [
        (
            lambda: kd.cache_teacher_outputs(teacher, (x[:40], y[:40]), path=path),
            "samples: cached 64, wanted 40",
        ),
        (
            lambda: kd.cache_teacher_outputs(teacher, x, path=path),
            "labels: cached True, wanted False",
        ),
        (
            lambda: kd.cache_teacher_outputs(retrained, (x, y), path=path),
            "teacher_weights_sha256",
        ),
        (
            lambda: kd.cache_teacher_outputs(teacher, (x, y), [hint], path=path),
            r"missing \['teacher_hidden'\]",
        ),
        (
            lambda: kd.cache_teacher_outputs(
                teacher, (x, y), path=path, dtype="float16"
            ),
            "dtype",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
    rebuilt = kd.cache_teacher_outputs(
        teacher, (x[:40], y[:40]), [hint], path=path, overwrite=True, batch_size=None
    )
    assert rebuilt.cardinality() == 40
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="does not delete"):
        kd.cache_teacher_outputs(teacher, x, path=str(foreign), overwrite=True)
    assert (foreign / "notes.txt").exists()
    os.remove(tmp_path / "cache" / kd.cache.METADATA_FILE)  # an interrupted build
    with pytest.raises(ValueError, match="incomplete"):
        kd.cache_teacher_outputs(teacher, x, path=path)


def test_distiller_refuses_a_cache_for_another_teacher_or_taps(classification_data):
    x, y = classification_data
    teacher, _ = counted_teacher()
    other, _ = counted_teacher(width=8, name="other_teacher")
    logits_only = kd.cache_teacher_outputs(teacher, (x, y), kd.LogitsDistillation())
    for_other = kd.cache_teacher_outputs(other, (x, y))
    distiller = distiller_for(teacher)
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match=r"without \['teacher_logits'\]"):
        distiller.fit(logits_only, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="other_teacher"):
        distiller.fit(x, y, validation_data=for_other, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="other_teacher"):
        distiller.evaluate(for_other, verbose=0)
    for a, b in zip(before, distiller.student.get_weights()):
        np.testing.assert_array_equal(a, b)  # refused before any step


def test_evaluate_without_the_teacher(classification_data):
    x, y = classification_data
    teacher, counter = counted_teacher()
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        4, activation="relu", kernel_regularizer=keras.regularizers.L2(0.1)
    )(inputs)
    student = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(2.0))
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    with_teacher = distiller.evaluate(x, y, verbose=0, return_dict=True)
    distiller.evaluate_with_teacher = False
    before = calls(counter)
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert calls(counter) == before
    student.compile("adam", SPARSE_CE, metrics=["accuracy"])
    expected = student.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "student_loss", "accuracy"}
    assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-5)  # + L2 term
    assert logs["loss"] > logs["student_loss"]
    assert logs["student_loss"] == pytest.approx(with_teacher["student_loss"], rel=1e-5)
    assert logs["accuracy"] == pytest.approx(expected["accuracy"])
    cached = kd.cache_teacher_outputs(teacher, (x, y), batch_size=16)
    history = distiller.fit(cached, validation_data=(x, y), epochs=1, verbose=0).history
    assert "val_distillation_loss" not in history and "distillation_loss" in history
    with pytest.raises(TypeError, match="True or False"):
        distiller.evaluate_with_teacher = "no"
    distiller.evaluate_with_teacher = True
    assert "distillation_loss" in distiller.evaluate(x, y, verbose=0, return_dict=True)
    distiller.evaluate_with_teacher = False
    # Last: under JAX, an error raised while Keras traces the first step
    # leaves the model's variables detached (Keras does not sync them back).
    with pytest.raises(ValueError, match="has none"):
        distiller.evaluate(x, verbose=0)


def test_random_augmentation_is_warned_about():
    images = np.random.default_rng(0).random((8, 4, 4, 1)).astype("float32")
    augmented = (
        tf.data.Dataset.from_tensor_slices(images)
        .map(tf.image.random_flip_left_right)
        .batch(4)
    )
    teacher = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)],
        name="image_teacher",
    )
    with pytest.warns(UserWarning, match="random operations"):
        cached = kd.cache_teacher_outputs(teacher, augmented)
    with warnings.catch_warnings():
        # no false alarm on a plain pipeline (only ours: a UserWarning)
        warnings.simplefilter("error", UserWarning)
        kd.cache_teacher_outputs(
            teacher, tf.data.Dataset.from_tensor_slices(images).batch(4)
        )
    student = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.RandomFlip(name="flip"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ],
    )
    distiller = kd.Distiller(teacher, student, kd.LogitsDistillation())
    distiller.compile("adam")
    with pytest.warns(UserWarning, match=r"random augmentation layers \['flip'\]"):
        distiller.fit(cached, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda t, x: kd.cache_teacher_outputs("teacher", x), TypeError, "keras.Model"),
        (
            lambda t, x: kd.cache_teacher_outputs(t, x, batch_size=0),
            ValueError,
            "batch_size >= 1",
        ),
        (
            lambda t, x: kd.cache_teacher_outputs(t, x, batch_size=2.5),
            TypeError,
            "integer",
        ),
        (
            lambda t, x: kd.cache_teacher_outputs(t, x, batch_size=None, shuffle=False),
            ValueError,
            "batch_size=None",
        ),
        (
            lambda t, x: kd.cache_teacher_outputs(t, x, dtype="int8"),
            ValueError,
            "dtype",
        ),
        (lambda t, x: kd.cache_teacher_outputs(t, None), ValueError, "data=None"),
        (
            lambda t, x: kd.cache_teacher_outputs(t, x, ["mse"]),
            TypeError,
            "DistillationLoss",
        ),
        (
            lambda t, x: kd.cache_teacher_outputs(
                t, x, kd.FeatureDistillation("mse", "teacher_hiden", None)
            ),
            ValueError,
            "Did you mean",
        ),
    ],
)
def test_bad_arguments_are_refused(classification_data, call, error, match):
    teacher, _ = counted_teacher()
    with pytest.raises(error, match=match):
        call(teacher, classification_data[0])


def test_a_cache_is_refused_by_a_distiller_with_several_teachers(classification_data):
    x, y = classification_data
    teachers = [make_classifier(16, name="t0"), make_classifier(8, name="t1")]
    distiller = kd.Distiller(
        teachers, make_classifier(4, name="student"), kd.LogitsDistillation(2.0)
    )
    distiller.compile("adam", SPARSE_CE)
    cached = kd.cache_teacher_outputs(teachers[0], (x, y), batch_size=16)
    with pytest.raises(ValueError, match="with one teacher"):
        distiller.fit(cached, epochs=1, verbose=0)
    distiller.fit(x, y, epochs=1, verbose=0)  # on the inputs themselves


class Batches(keras.utils.PyDataset):
    """A PyDataset of (x, y) batches."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def test_pydataset_and_backend_tensors_are_cached_like_arrays(classification_data):
    """The documented inputs besides numpy arrays: a keras.utils.PyDataset
    (its batches kept for the teacher) and tensors of the current backend;
    anything else is refused with a TypeError naming what is accepted."""
    x, y = classification_data
    teacher, _ = counted_teacher()
    expected = kd.cache_teacher_outputs(teacher, (x, y), batch_size=16, shuffle=False)
    from_pydataset = kd.cache_teacher_outputs(
        teacher, Batches(x, y, 16), batch_size=16, shuffle=False
    )
    from_tensors = kd.cache_teacher_outputs(
        teacher,
        (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)),
        batch_size=16,
        shuffle=False,
    )
    for cached in (from_pydataset, from_tensors):
        for a, b in zip(expected, cached):
            keras.tree.map_structure(
                lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6), a, b
            )
    with pytest.raises(
        TypeError, match=r"keras.utils.PyDataset. Received an element of type generator"
    ):
        kd.cache_teacher_outputs(teacher, (row for row in x))
    with pytest.raises(TypeError, match="of type str"):
        kd.cache_teacher_outputs(teacher, ("inputs", y))
    with pytest.raises(
        ValueError,
        match=r"same number of samples. Received arrays of lengths \[40, 64\]",
    ):
        kd.cache_teacher_outputs(teacher, (x, y[:40]))


def test_augmentation_inside_a_nested_model_is_found():
    """The student's random augmentation layers are searched in nested
    models too (the warning of a cached fit names them)."""
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.RandomTranslation(0.1, 0.1, name="shift")],
        name="inner",
    )
    outer = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(3)])
    nested = keras.Sequential([keras.Input((6,)), outer], name="student")
    assert randomness.augmentation_layers(nested) == ["shift"]
    plain = keras.Sequential([keras.Input((6,)), keras.layers.GaussianNoise(0.1)])
    assert randomness.augmentation_layers(plain) == []


def test_tapped_layer_names_are_read_without_creating_loss_objects(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a loss object was created to read a layer name")

    losses = [
        keras.distillation.FeatureDistillation("mse", "t_hidden", "s_hidden"),
        keras.distillation.LogitsDistillation(),
        kd.FeatureDistillation("mse", "t_other", "s_other"),
        kd.FeatureDistillation("cosine", "t_hidden", "s_hidden"),
    ]
    monkeypatch.setattr(kd.FeatureDistillation, "__init__", refuse)
    monkeypatch.setattr(kd.LogitsDistillation, "__init__", refuse)
    assert kd.cache.teacher_layer_names(losses) == ["t_hidden", "t_other"]
