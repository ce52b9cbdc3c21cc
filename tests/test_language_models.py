"""Language models from keras-hub (built from config, no weights, no
preprocessor): sequence-level KD's transfer set, token-level top-k KD with
the padding mask, and the export of a student with dict inputs."""

import keras
import numpy as np
import pytest
from conftest import as_numpy

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras-hub is not installed (pip install 'kerasdistill[hub]')"
)

import kerasdistill as kd  # noqa: E402

VOCAB, LENGTH = 40, 10


def gpt2(hidden, layers, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=layers,
        num_heads=2,
        hidden_dim=hidden,
        intermediate_dim=2 * hidden,
        max_sequence_length=16,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def prompts():
    ids = np.zeros((6, 6), "int32")
    mask = np.zeros((6, 6), bool)
    for row, length in enumerate([2, 3, 4, 2, 3, 4]):
        ids[row, :length] = np.arange(1, length + 1) + row
        mask[row, :length] = True
    return {"token_ids": ids, "padding_mask": mask}


def test_transfer_set_holds_the_teachers_greedy_continuations():
    teacher = gpt2(16, 1, seed=0)
    sampler = teacher.sampler
    given = prompts()
    dataset = kd.generate_transfer_set(
        teacher, given, max_length=LENGTH, batch_size=3, shuffle=False
    )
    assert teacher.sampler is sampler  # greedy for this call only
    batches = list(dataset.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [3, 3]
    x = {
        k: np.concatenate([b[0][k] for b in batches])
        for k in ("token_ids", "padding_mask")
    }
    y = np.concatenate([b[1] for b in batches])
    weights = np.concatenate([b[2] for b in batches])
    assert x["token_ids"].shape == y.shape == weights.shape == (6, LENGTH - 1)
    np.testing.assert_array_equal(x["token_ids"][:, 1:], y[:, :-1])  # shifted by one
    np.testing.assert_array_equal(
        x["token_ids"][:, :6][given["padding_mask"]],
        given["token_ids"][given["padding_mask"]],
    )
    lengths = given["padding_mask"].sum(1)
    # Labels count from the first generated token on (not on the prompt).
    expected_weights = (np.arange(1, LENGTH)[None] >= lengths[:, None]).astype(
        "float32"
    )
    np.testing.assert_array_equal(weights, expected_weights)
    # Greedy: each generated token is the teacher's argmax after its prefix.
    full = np.concatenate([x["token_ids"], y[:, -1:]], axis=1)
    logits = as_numpy(teacher({"token_ids": full, "padding_mask": np.ones_like(full)}))
    generated = weights > 0
    np.testing.assert_array_equal(
        np.argmax(logits[:, :-1], -1)[generated], y[generated]
    )


def test_stop_token_ends_a_sequence_and_bad_input_is_refused():
    teacher = gpt2(16, 1, seed=0)
    given = prompts()
    first = next(
        kd.generate_transfer_set(
            teacher, given, max_length=LENGTH, shuffle=False
        ).as_numpy_iterator()
    )
    stop = int(first[1][0, 1])  # the first token generated after prompt 0
    x, _, weights = next(
        kd.generate_transfer_set(
            teacher,
            given,
            max_length=LENGTH,
            stop_token_ids=(stop,),
            shuffle=False,
            loss_on_prompt=True,
        ).as_numpy_iterator()
    )
    assert not x["padding_mask"][0, 3:].any()  # padding after the stop token
    np.testing.assert_array_equal(weights[0], [1, 1] + [0] * (LENGTH - 3))
    with pytest.raises(TypeError, match="keras_hub.models.CausalLM"):
        kd.generate_transfer_set(teacher.backbone, given)
    with pytest.raises(ValueError, match="dict"):
        kd.generate_transfer_set(teacher, given["token_ids"])
    with pytest.raises(ValueError, match="room to generate"):
        kd.generate_transfer_set(teacher, given, max_length=4)
    shifted = dict(given, padding_mask=np.roll(given["padding_mask"], 1, axis=1))
    with pytest.raises(ValueError, match="left-aligned"):
        kd.generate_transfer_set(teacher, shifted, max_length=LENGTH)


@pytest.mark.slow  # ~9 s on TensorFlow, a minute on JAX (compiles)
def test_top_k_token_kd_and_dict_input_export_of_a_keras_hub_student(tmp_path):
    teacher, student = gpt2(16, 1, seed=0), gpt2(8, 1, seed=1)
    transfer = kd.generate_transfer_set(teacher, prompts(), max_length=LENGTH)
    distiller = kd.Distiller(
        teacher, student, kd.LogitsDistillation(2.0, top_k=8), student_loss_weight=0.5
    )
    distiller.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = distiller.fit(transfer, epochs=2, verbose=0).history
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    x, _, _ = next(transfer.as_numpy_iterator())
    for path, format in (
        (tmp_path / "student", "saved_model"),
        (tmp_path / "student.tflite", "tflite"),
    ):
        report = kd.export_student(distiller, path, format=format, sample_inputs=x)
        assert report.num_samples == len(x["token_ids"]) and report.relative_diff < 1e-4
