"""TFDS input: `kerasdistill.tfds_data`, the Distiller and feature taps on
TFDS pipelines, and the TFDS example and demo end to end, all offline under
`tfds.testing.mock_data` (random examples shaped like the real ones).

TFDS and its pipelines are tf.data, which feeds `fit()` on every backend:
the pipeline, fit and cache tests run under the current `KERAS_BACKEND`.
The end-to-end demo and example runs (about 15-25 s each under JAX here)
are TensorFlow-only to keep the JAX / PyTorch CI short; they pass under
both too.
"""

import ast
import runpy
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasdistill as kd
from kerasdistill import cli
from kerasdistill import demo

tfds = pytest.importorskip("tensorflow_datasets")

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
EXAMPLES = 32  # per split under mock_data


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(
        num_examples=EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        yield


def tiny_cnn(shape, name):
    inputs = keras.Input(shape)
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    hidden = keras.layers.Dense(8, activation="relu", name=f"{name}_hidden")(hidden)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden), name=name)


def tiny_mlp(shape, name):
    inputs = keras.Input(shape)
    hidden = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Dense(8, activation="relu", name=f"{name}_hidden")(hidden)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden), name=name)


@pytest.mark.parametrize("name", sorted(IMAGE_SHAPES))
def test_prepare_scales_and_batches_tuples_and_feature_dicts(name, mock_tfds):
    supervised, info = kd.tfds_data.load(name, "train")
    features, _ = kd.tfds_data.load(name, "train", as_supervised=False)
    raw_images, raw_labels = next(iter(supervised.batch(8)))
    assert info.features["image"].shape == IMAGE_SHAPES[name]

    for dataset in (supervised, features):
        images, labels = next(iter(kd.tfds_data.prepare(dataset, batch_size=8)))
        assert images.dtype == tf.float32
        assert tuple(images.shape) == (8, *IMAGE_SHAPES[name])
        np.testing.assert_allclose(images, raw_images.numpy() / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(labels, raw_labels)

    transfer = kd.tfds_data.prepare(features, batch_size=8, labels=False)
    assert isinstance(transfer.element_spec, tf.TensorSpec)
    np.testing.assert_allclose(
        next(iter(transfer)), raw_images.numpy() / 255.0, rtol=1e-6
    )
    unscaled = kd.tfds_data.prepare(supervised, batch_size=8, rescale=None)
    np.testing.assert_array_equal(next(iter(unscaled))[0], raw_images)
    shuffled = [
        kd.tfds_data.prepare(supervised, 8, shuffle=EXAMPLES, seed=3) for _ in range(2)
    ]
    first, second = (
        np.concatenate([y for _, y in s.as_numpy_iterator()]) for s in shuffled
    )
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(
        np.sort(first),
        np.sort(
            np.concatenate([y for _, y in supervised.batch(8).as_numpy_iterator()])
        ),
    )


@pytest.mark.parametrize("name", sorted(IMAGE_SHAPES))
def test_distiller_with_feature_taps_trains_on_tfds_pipelines(name, mock_tfds):
    shape = IMAGE_SHAPES[name]
    teacher, student = tiny_cnn(shape, "t"), tiny_mlp(shape, "s")
    distiller = kd.Distiller(
        teacher,
        student,
        [
            kd.LogitsDistillation(temperature=2.0),
            kd.FeatureDistillation(
                "mse", teacher_layer_name="t_hidden", student_layer_name="s_hidden"
            ),
        ],
    )
    distiller.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher_weights = [w.numpy().copy() for w in teacher.weights]
    student_weights = [w.numpy().copy() for w in student.weights]

    supervised, _ = kd.tfds_data.load(name, "train")
    dicts, _ = kd.tfds_data.load(name, "test", as_supervised=False)
    mapped = dicts.map(lambda f: (f["image"], f["label"]))  # the usual glue
    history = distiller.fit(
        kd.tfds_data.prepare(supervised, 8, shuffle=EXAMPLES, seed=0),
        epochs=1,
        validation_data=kd.tfds_data.prepare(mapped, 8),
        verbose=0,
    ).history
    transfer = distiller.fit(
        kd.tfds_data.prepare(dicts, 8, labels=False), epochs=1, verbose=0
    ).history
    scores = distiller.evaluate(
        kd.tfds_data.prepare(dicts, 8), verbose=0, return_dict=True
    )
    cached = kd.cache_teacher_outputs(  # teacher outputs and tapped features
        teacher,
        kd.tfds_data.prepare(supervised, 8),
        distiller.distillation_losses,
        batch_size=8,
    )
    from_cache = distiller.fit(cached, epochs=1, verbose=0).history

    for logs in (history, transfer, from_cache):
        assert np.isfinite(logs["loss"][0]) and logs["distillation_loss"][0] > 0
    assert "student_loss" in history and "student_loss" not in transfer
    assert "student_loss" in from_cache
    assert 0.0 <= scores["accuracy"] <= 1.0 and np.isfinite(scores["loss"])
    for before, after in zip(teacher_weights, teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert any(
        not np.array_equal(before, after.numpy())
        for before, after in zip(student_weights, student.weights)
    )


def test_unmapped_feature_dicts_get_a_clear_error(mock_tfds):
    dicts, _ = kd.tfds_data.load("mnist", "train", as_supervised=False)
    shape = IMAGE_SHAPES["mnist"]
    distiller = kd.Distiller(
        tiny_cnn(shape, "t"), tiny_mlp(shape, "s"), kd.LogitsDistillation()
    )
    distiller.compile("adam")
    with pytest.raises(ValueError, match=r"feature dicts.*as_supervised=True"):
        distiller.fit(dicts.batch(8), epochs=1, verbose=0)


def test_prepare_rejects_bad_arguments(mock_tfds):
    supervised, _ = kd.tfds_data.load("mnist", "train")
    dicts, _ = kd.tfds_data.load("mnist", "train", as_supervised=False)
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        kd.tfds_data.prepare(np.zeros((4, 28, 28, 1)))
    with pytest.raises(ValueError, match="batch_size"):
        kd.tfds_data.prepare(supervised, batch_size=0)
    with pytest.raises(TypeError, match="shuffle"):
        kd.tfds_data.prepare(supervised, shuffle=True)
    with pytest.raises(ValueError, match="rescale"):
        kd.tfds_data.prepare(supervised, rescale=-1.0)
    with pytest.raises(ValueError, match=r"'pixels'.*\['image', 'label'\]"):
        kd.tfds_data.prepare(dicts, image_key="pixels")
    with pytest.raises(ValueError, match="labels=False"):
        kd.tfds_data.prepare(supervised.map(lambda x, y: x))
    with pytest.raises(TypeError, match="numeric images"):
        kd.tfds_data.prepare(tf.data.Dataset.from_tensor_slices((["a"], [0])))


def test_not_on_disk_stops_at_once_with_how_to_prepare(tmp_path, monkeypatch):
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        kd.tfds_data.load("mnist", "train", data_dir=str(tmp_path))
    for part in (
        "'mnist'",
        str(tmp_path / "mnist"),
        "downloading is off",
        f"tfds build mnist --data_dir {tmp_path}",
        "--download",
    ):
        assert part in str(error.value)
    # Offline (a host that never resolves, RFC 2606), download=True stops too.
    monkeypatch.setattr(
        kd.tfds_data, "ONLINE_PROBE_URL", "https://kerasdistill.invalid"
    )
    with pytest.raises(
        FileNotFoundError,
        match=(
            r"'mnist'.*cannot be downloaded: no connection to "
            r"https://kerasdistill.invalid.*tfds build mnist"
        ),
    ):
        kd.tfds_data.load("mnist", "train", data_dir=str(tmp_path), download=True)

    example = runpy.run_path(str(ROOT / "examples" / "tfds_distillation.py"))
    with pytest.raises(SystemExit, match=rf"'cifar10'.*{tmp_path}"):
        example["main"](["--dataset", "cifar10", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=rf"'fashion_mnist'.*{tmp_path}"):
        cli.main(
            [
                "demo",
                "--dataset",
                "fashion_mnist",
                "--data-dir",
                str(tmp_path),
                "--download",
            ]
        )
    assert time.perf_counter() - started < 10.0
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded


@pytest.mark.tensorflow_only(
    reason="end-to-end demo / example run, kept to the TensorFlow CI for time"
)
def test_run_demo_on_a_data_set_prepared_on_disk(tmp_path):
    """No mock: a small data set that TFDS writes into `tmp_path` (DummyMnist
    generates its 20 + 20 examples locally) is read from there."""
    tfds.testing.DummyMnist(data_dir=str(tmp_path)).download_and_prepare()
    data = kd.tfds_data.labeled_split(
        "dummy_mnist", labeled_fraction=0.5, seed=1, data_dir=str(tmp_path)
    )
    assert data["x_train"].shape == (20, 28, 28, 1) and data["classes"] == 10
    assert data["x_train"].dtype == np.float32
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() <= 1.0
    assert data["x_labeled"].shape == (10, 28, 28, 1)
    for x, y in zip(data["x_labeled"], data["y_labeled"]):  # a subset, with its labels
        rows = np.flatnonzero((data["x_train"] == x).all(axis=(1, 2, 3)))
        assert y in data["y_train"][rows]

    results = demo.run_demo(epochs=1, verbose=0, data=data)
    assert set(results) == {"teacher", "baseline", "student", "history", "data"}
    assert results["student"].input_shape == (None, 28, 28, 1)
    assert "trained on 10 labeled inputs" in demo.describe(results)


def test_unknown_names_and_misplaced_flags_are_refused():
    with pytest.raises(ValueError, match=r"name='mnsit'.*Did you mean \['mnist'"):
        kd.tfds_data.load("mnsit", "train")
    with pytest.raises(SystemExit, match="add --dataset"):
        cli.main(["demo", "--data-dir", "/tmp"])
    with pytest.raises(ValueError, match="labeled_fraction"):
        kd.tfds_data.labeled_split("mnist", labeled_fraction=0.0)
    with pytest.raises(ValueError, match=r"labeled_fraction=None when `data`"):
        demo.run_demo(data=demo.digits_split(), labeled_fraction=0.5)


def test_tensorflow_datasets_is_imported_only_when_used(monkeypatch):
    for path in (ROOT / "kerasdistill").glob("*.py"):
        top_level = ast.parse(path.read_text()).body  # imports at import time
        imported = [
            alias.name
            for node in top_level
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        ] + [node.module for node in top_level if isinstance(node, ast.ImportFrom)]
        assert not any("tensorflow_datasets" in (name or "") for name in imported), path
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # not installed
    with pytest.raises(ImportError, match=r'pip install "kerasdistill\[datasets\]"'):
        kd.tfds_data.load("mnist", "train")


@pytest.mark.tensorflow_only(
    reason="end-to-end demo / example run, kept to the TensorFlow CI for time"
)
@pytest.mark.parametrize("name", sorted(IMAGE_SHAPES))
def test_demo_on_a_tfds_dataset_prints_the_table(name, mock_tfds, capsys, tmp_path):
    argv = [
        "demo",
        "--dataset",
        name,
        "--epochs",
        "1",
        "--verbose",
        "0",
        "--output",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    labeled = round(0.2 * EXAMPLES)
    assert f"trained on {labeled} labeled inputs" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith(("teacher ", "baseline ", "student "))
    }
    assert set(rows) == {"teacher", "baseline", "student"}
    assert 0.0 <= float(rows["student"][4]) <= 1.0
    teacher_params, student_params = (
        int(rows[role][1].replace(",", "")) for role in ("teacher", "student")
    )
    assert (tmp_path / "report.md").exists()
    model = demo.image_classifier(IMAGE_SHAPES[name], 10, "s")
    assert student_params == model.count_params() < teacher_params


@pytest.mark.tensorflow_only(
    reason="end-to-end demo / example run, kept to the TensorFlow CI for time"
)
@pytest.mark.parametrize(
    "name",
    [
        "cifar10",
        pytest.param("mnist", marks=pytest.mark.slow),  # runs twice
    ],
)
def test_tfds_example_runs(name, mock_tfds, tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "tfds_distillation.py"))
    argv = [
        "--dataset",
        name,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--verbose",
        "0",
        "--teacher",
        str(tmp_path / "teacher.keras"),
    ]
    example["main"](argv)
    out = capsys.readouterr().out
    assert "Saved the teacher" in out and f"{name}: test accuracy" in out
    table = [
        line for line in out.splitlines() if line.startswith(("teacher", "student"))
    ]
    assert len(table) == 3
    assert all(0.0 <= float(line.split()[-1]) <= 1.0 for line in table)
    if name == "mnist":  # a second run loads the saved teacher
        example["main"](argv)
        again = capsys.readouterr().out
        assert "Loaded the teacher" in again
        assert [line for line in again.splitlines() if line.startswith("teacher")] == (
            table[:1]
        )


def test_a_tfds_failure_on_a_prepared_data_set_is_a_clear_error(tmp_path, monkeypatch):
    """TFDS raises a bare AssertionError when it cannot read a split; on a
    data set that is on disk, that is not "not prepared": a ValueError says
    what was expected, what TFDS said and how to fix it."""
    tfds.testing.DummyMnist(data_dir=str(tmp_path)).download_and_prepare()

    def failing_load(*args, **kwargs):
        raise AssertionError("could not read the shards")

    monkeypatch.setattr(tfds, "load", failing_load)
    with pytest.raises(
        ValueError,
        match=(
            r"Expected tensorflow_datasets to read the prepared data set "
            r"'dummy_mnist' .* split='train'\. Received this failure from TFDS "
            r"instead: could not read the shards\. .*tfds build dummy_mnist "
            rf"--data_dir {tmp_path} --overwrite"
        ),
    ):
        kd.tfds_data.load("dummy_mnist", "train", data_dir=str(tmp_path))
