"""Transformers: layer mapping, padding masks in the feature losses and
attention transfer, on tiny keras-hub BERT models built without weights."""

import keras
import numpy as np
import pytest

import kerasdistill as kd
from kerasdistill.losses import masking
from tests.conftest import as_numpy

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras-hub is not installed: pip install 'kerasdistill[hub]'"
)

VOCABULARY, LENGTH = 50, 8


def make_bert(layers, hidden, heads, name):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden,
        intermediate_dim=2 * hidden,
        max_sequence_length=16,
        dropout=0.0,
        name=f"{name}_backbone",
    )
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None, dropout=0.0, name=name
    )


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(1)
    return make_bert(4, 16, 2, "teacher")


@pytest.fixture(scope="module")
def student():
    keras.utils.set_random_seed(2)
    return make_bert(2, 8, 1, "student")


@pytest.fixture(scope="module")
def three_layers():
    keras.utils.set_random_seed(3)
    return make_bert(3, 8, 1, "three")


def padded_batch(seed=0, batch=4):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCABULARY, (batch, LENGTH)).astype("int32")
    lengths = np.array([LENGTH, 5, 3, 6][:batch])
    mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype("int32")
    x = {
        "token_ids": tokens * mask,
        "segment_ids": np.zeros_like(tokens),
        "padding_mask": mask,
    }
    other = dict(
        x,
        token_ids=np.where(
            mask == 1, tokens, rng.integers(1, VOCABULARY, tokens.shape)
        ).astype("int32"),
    )
    return x, other, (tokens[:, 0] > 25).astype("int32")


def test_uniform_is_tinyberts_map_with_adapters(teacher, student):
    losses = kd.layer_mapping(teacher, student)
    assert [(loss.teacher_layer_name, loss.student_layer_name) for loss in losses] == [
        (
            "teacher_backbone/transformer_layer_1",
            "student_backbone/transformer_layer_0",
        ),
        (
            "teacher_backbone/transformer_layer_3",
            "student_backbone/transformer_layer_1",
        ),
    ]
    assert all(isinstance(loss, kd.FeatureDistillation) for loss in losses)
    assert {loss.mask for loss in losses} == {"padding_mask"}  # mask="auto"
    kd.Distiller(teacher, student, losses)
    for loss in losses:  # width 8 -> 16
        assert loss.adapter.compute_output_shape((None, LENGTH, 8)) == (
            None,
            LENGTH,
            16,
        )


def test_last_dict_and_uneven_strategies(three_layers, student):
    three, two = three_layers, student
    pairs = lambda losses: [  # noqa: E731
        (
            loss.teacher_layer_name.rsplit("_", 1)[-1],
            loss.student_layer_name.rsplit("_", 1)[-1],
        )
        for loss in losses
    ]
    assert pairs(kd.layer_mapping(three, two)) == [("0", "0"), ("2", "1")]
    assert pairs(kd.layer_mapping(three, two, "last")) == [("2", "1")]
    assert pairs(
        kd.layer_mapping(three, two, {1: 0, -1: "student_backbone/transformer_layer_1"})
    ) == [
        ("1", "0"),
        ("2", "1"),
    ]
    (embedding, *_) = kd.layer_mapping(
        three, two, embeddings=True, mask=None, adapter=None
    )
    assert embedding.teacher_layer_name == "three_backbone/embeddings_dropout"
    assert embedding.student_layer_name == "student_backbone/embeddings_dropout"
    assert embedding.mask is None and embedding.adapter is None
    with pytest.raises(ValueError, match="at most as many layers"):
        kd.layer_mapping(two, three)
    with pytest.raises(
        ValueError, match=r"Expected layers named 'block_\{i\}'.*token_embedding"
    ):
        kd.layer_mapping(three, two, layer_pattern="block_{i}")
    with pytest.raises(ValueError, match="index into its 3 layers"):
        kd.layer_mapping(three, two, {7: 0})
    with pytest.raises(ValueError, match="strategy"):
        kd.layer_mapping(three, two, "every_other")


def test_padded_tokens_do_not_change_the_masked_losses(teacher, student):
    x, other, _ = padded_batch()
    masked = kd.layer_mapping(teacher, student, embeddings=True, attention="kl")
    assert [type(loss).__name__ for loss in masked].count("AttentionDistillation") == 2
    unmasked = kd.layer_mapping(teacher, student, embeddings=True, mask=None)
    for losses, changes in ((masked, False), (unmasked, True)):
        distiller = kd.Distiller(teacher, student, losses)
        first, second = [
            float(as_numpy(distiller.compute_loss(inputs, None, training=False)))
            for inputs in (x, other)
        ]
        assert first > 0
        assert (abs(first - second) > 1e-4 * first) is changes


def test_masked_feature_losses_match_numpy():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(3, 5, 4)).astype("float32")
    s = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], "int32")
    position_weight = rng.uniform(0.5, 2.0, size=(3, 5)).astype("float32")
    inputs = {"padding_mask": mask}

    def per_sample(function):
        return np.array(
            [function(t[b, mask[b] == 1], s[b, mask[b] == 1], b) for b in range(3)]
        )

    # The per-position losses: the mean over the batch's unpadded positions
    # (Keras's masked mean), per-position weights weighting each position.
    square = np.mean((s - t) ** 2, -1)
    valid = mask == 1
    loss = kd.FeatureDistillation("mse", mask="padding_mask")
    assert float(loss.compute_loss(t, s, inputs=inputs)) == pytest.approx(
        square[valid].mean(), rel=1e-5
    )
    assert float(
        loss.compute_loss(t, s, sample_weight=position_weight, inputs=inputs)
    ) == (pytest.approx((position_weight * square)[valid].mean(), rel=1e-5))
    sample_weight = np.array([1.0, 0.0, 2.0], "float32")
    assert float(
        loss.compute_loss(t, s, sample_weight=sample_weight, inputs=inputs)
    ) == (pytest.approx((sample_weight[:, None] * square)[valid].mean(), rel=1e-5))
    cosine = per_sample(
        lambda tb, sb, b: (
            1 - np.sum(tb * sb) / (np.linalg.norm(tb) * np.linalg.norm(sb))
        )
    )
    loss = kd.FeatureDistillation("cosine", mask="padding_mask")
    assert float(loss.compute_loss(t, s, inputs=inputs)) == pytest.approx(
        cosine.mean(), rel=1e-5
    )
    mae = np.mean(np.abs(s - t), -1)[valid].mean()
    loss = kd.FeatureDistillation("mae", mask="padding_mask")
    assert float(loss.compute_loss(t, s, inputs=inputs)) == pytest.approx(mae, rel=1e-5)
    # Per-position weights without a mask (none of them 0): every position.
    loss = kd.FeatureDistillation("mse")
    expected = np.mean(np.sum(position_weight * np.mean((s - t) ** 2, -1), -1) / 5)
    assert float(loss.compute_loss(t, s, sample_weight=position_weight)) == (
        pytest.approx(expected, rel=1e-5)
    )
    values = masking.masked_mean(
        keras.ops.array([[1.0, 3.0, 9.0]]), keras.ops.array([[1.0, 1.0, 0.0]])
    )
    np.testing.assert_allclose(as_numpy(values), [2.0])


def attention_maps(seed, heads, mask):
    """Softmax rows over the unpadded keys, (batch, heads, queries, keys)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(mask), heads, LENGTH, LENGTH)).astype("float32")
    logits = np.where(mask[:, None, None, :] == 1, logits, -1e9)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def test_attention_losses_match_the_papers_formulas():
    mask = padded_batch()[0]["padding_mask"]
    t, s = attention_maps(0, 2, mask), attention_maps(1, 2, mask)
    mse, kl = [], []
    for b in range(len(mask)):
        idx = np.flatnonzero(mask[b])
        tb, sb = t[b][:, idx][:, :, idx], s[b][:, idx][:, :, idx]
        # TinyBERT eq. 3: 1/h sum_i MSE(A_i^S, A_i^T).
        mse.append(np.mean([np.mean((sb[h] - tb[h]) ** 2) for h in range(2)]))
        # MiniLM eq. 2: 1/(A_h |x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t}).
        kl.append(np.sum(tb * np.log(tb / sb)) / (2 * len(idx)))
    valid = keras.ops.cast(mask, "float32")
    np.testing.assert_allclose(
        as_numpy(kd.transformers.attention_mse(t, s, valid)), mse, rtol=1e-4
    )
    np.testing.assert_allclose(
        as_numpy(kd.transformers.attention_kl(t, s, valid)), kl, rtol=1e-4
    )
    loss = kd.AttentionDistillation("a", "b", loss="kl", mask="padding_mask")
    assert float(loss.compute_loss(t, s, inputs={"padding_mask": mask})) == (
        pytest.approx(np.mean(kl), rel=1e-4)
    )
    averaged = kd.AttentionDistillation("a", "b", loss="mse", average_heads=True)
    full = np.mean(
        [np.mean((s[b].mean(0) - t[b].mean(0)) ** 2) for b in range(len(mask))]
    )
    assert float(averaged.compute_loss(t, s)) == pytest.approx(full, rel=1e-4)


def test_attention_refusals_name_the_layer(teacher, student):
    with pytest.raises(ValueError, match="value relation"):
        kd.AttentionDistillation("a", "b", loss="value_relation")
    one_to_one = kd.AttentionDistillation(
        "teacher_backbone/transformer_layer_3", "student_backbone/transformer_layer_1"
    )
    with pytest.raises(ValueError, match="2 heads in .*1 in .*average_heads=True"):
        kd.Distiller(teacher, student, one_to_one)
    gpt2 = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_heads=1,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=16,
    )
    decoder = kd.AttentionDistillation("transformer_layer_0", "transformer_layer_0")
    with pytest.raises(
        ValueError, match="layer 'transformer_layer_0'.*TransformerDecoder"
    ):
        decoder.validate_model_compatibility(gpt2, gpt2)
    with pytest.raises(ValueError, match="dict input 'tokens'"):
        kd.Distiller(
            teacher,
            student,
            kd.FeatureDistillation(
                teacher_layer_name="teacher_backbone/transformer_layer_3",
                student_layer_name="student_backbone/transformer_layer_1",
                mask="tokens",
            ),
        )
    with pytest.raises(ValueError, match="needs a sequence"):
        kd.Distiller(teacher, student, kd.FeatureDistillation(mask="padding_mask"))


@pytest.mark.slow  # tracing a train step of two BERTs: about 10 s on TensorFlow
def test_training_and_saving_a_distiller_with_the_mapping(teacher, student, tmp_path):
    x, _, y = padded_batch(batch=4)
    losses = kd.layer_mapping(teacher, student, strategy="last", attention="mse")
    assert losses[-1].get_config()["teacher_layer_name"] == (
        "teacher_backbone/transformer_layer_3:attention_scores"
    )
    assert kd.AttentionDistillation.from_config(
        losses[-1].get_config()
    ).get_config() == (losses[-1].get_config())
    assert (
        kd.FeatureDistillation.from_config(losses[0].get_config()).mask
        == "padding_mask"
    )
    distiller = kd.Distiller(teacher, student, [kd.LogitsDistillation(2.0), *losses])
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(loss).__name__ for loss in loaded.distillation_losses] == [
        "LogitsDistillation",
        "FeatureDistillation",
        "AttentionDistillation",
    ]
    assert loaded.distillation_losses[1].mask == "padding_mask"
    assert loaded.distillation_losses[1].adapter is not None
    assert float(as_numpy(loaded.compute_loss(x, y, training=False))) == pytest.approx(
        float(as_numpy(distiller.compute_loss(x, y, training=False))), rel=1e-5
    )
