"""export_student for students with several inputs (a dict, as keras-hub
text models take, or a list): the SavedModel and the TFLite signature take
the same named inputs, and the parity check runs on samples given as a
dict. Run under the session's backend (JAX and PyTorch students go through
the TensorFlow subprocess, whose samples travel as .npz)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter
tf = pytest.importorskip("tensorflow")

import kerasdistill as kd  # noqa: E402

SEQ, VOCAB = 5, 20


def token_student(dict_inputs=True):
    """Token ids (int32) and a float padding mask in, pooled logits out."""
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    mask = keras.Input((SEQ,), dtype="float32", name="padding_mask")
    hidden = keras.layers.Embedding(VOCAB, 8)(ids)
    hidden = keras.layers.Multiply()([hidden, keras.layers.Reshape((SEQ, 1))(mask)])
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(hidden))
    inputs = {"token_ids": ids, "padding_mask": mask} if dict_inputs else [ids, mask]
    return keras.Model(inputs, logits, name="token_student")


def token_samples(n=16):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, SEQ + 1, size=(n, 1))
    return {
        "token_ids": rng.integers(0, VOCAB, size=(n, SEQ)).astype("int32"),
        "padding_mask": (np.arange(SEQ)[None] < lengths).astype("float32"),
    }


@pytest.mark.parametrize("format", ["saved_model", "tflite"])
def test_dict_inputs_export_with_the_same_names(tmp_path, format):
    student, samples = token_student(), token_samples()
    path = tmp_path / ("s.tflite" if format == "tflite" else "s")
    report = kd.export_student(student, path, format=format, sample_inputs=samples)
    assert report.num_samples == 16 and report.relative_diff <= 1e-5
    expected = keras.ops.convert_to_numpy(student(samples))
    if format == "saved_model":
        loaded = tf.saved_model.load(str(path))
        serving = loaded.signatures["serving_default"]
        assert sorted(serving.structured_input_signature[1]) == sorted(samples)
        outputs = serving(**{k: tf.constant(v) for k, v in samples.items()})
        actual = next(iter(outputs.values())).numpy()
    else:
        runner = Interpreter(model_path=str(path)).get_signature_runner()
        assert sorted(runner.get_input_details()) == sorted(samples)
        actual = next(iter(runner(**samples).values()))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_list_inputs_and_a_dataset_of_dicts(tmp_path):
    samples = token_samples()
    report = kd.export_student(
        token_student(dict_inputs=False),
        tmp_path / "list",
        sample_inputs=[samples["token_ids"], samples["padding_mask"]],
    )
    assert report.num_samples == 16
    labels = np.zeros(16, "int32")
    dataset = tf.data.Dataset.from_tensor_slices((samples, labels)).batch(5)
    report = kd.export_student(
        token_student(),
        tmp_path / "s.tflite",
        format="tflite",
        quantization="dynamic",
        representative_data=dataset,
    )
    assert report.num_samples == 16  # the dataset's samples, unbatched


def test_bad_multi_input_samples_are_explained(tmp_path):
    student, samples = token_student(), token_samples()
    with pytest.raises(
        ValueError,
        match=r"keyed by the student's input names \['padding_mask', 'token_ids'\]",
    ):
        kd.export_student(student, tmp_path / "a", sample_inputs=samples["token_ids"])
    with pytest.raises(ValueError, match="not a fixed-shape float tensor"):
        kd.export_student(student, tmp_path / "b")  # token ids cannot be made up
    uneven = dict(samples, padding_mask=samples["padding_mask"][:3])
    with pytest.raises(ValueError, match="as many samples"):
        kd.export_student(student, tmp_path / "c", sample_inputs=uneven)
    with pytest.raises(ValueError, match="list of 2 arrays"):
        kd.export_student(
            token_student(dict_inputs=False),
            tmp_path / "d",
            sample_inputs=[samples["token_ids"]],
        )
    assert not os.listdir(tmp_path)
