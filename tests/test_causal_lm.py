"""`CausalLMDistiller` on keras-hub causal LMs built from config: on-policy
steps score the student's own generations with its current weights (checked
against an eager numpy recomputation), lmbda=0 is off-policy token KD, the
chunked step equals the full logits, the draws and a random sampler's seed
advance with the step's state, and the errors raised before training."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import as_numpy
from conftest import make_gemma_lm

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras-hub is not installed (pip install 'kerasdistill[hub]')"
)

import kerasdistill as kd  # noqa: E402

VOCAB, LENGTH = 24, 10
PROMPT_LENGTHS = [2, 3, 4, 3]
SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def gpt2(width, seed, vocabulary=VOCAB, scale=1.0):
    """A GPT-2 causal LM whose weights are scaled by `scale` (sharper
    distributions: divergences far above float32 round-off)."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary,
        num_layers=1,
        num_heads=2,
        hidden_dim=width,
        intermediate_dim=2 * width,
        max_sequence_length=16,
        dropout=0.0,
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.set_weights([w * scale for w in model.get_weights()])
    return model


def gemma(width, seed, name):
    return make_gemma_lm(width, seed, name, VOCAB)


def batch(padding=0):
    """`(x, y, sample_weight)`: 4 sequences, prompts of 2-4 tokens, the
    last `padding` positions of the second sequence padded."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (4, LENGTH + 1)).astype("int32")
    positions = np.arange(LENGTH + 1)[None]
    prompt = positions < np.array(PROMPT_LENGTHS)[:, None]
    mask = np.ones_like(prompt)
    if padding:
        mask[1, -padding:] = False
        ids[1, -padding:] = 0
    return kd.transformers.prompt_completion_data(ids, prompt, mask)


def gjsd(teacher_logits, student_logits, beta, temperature):
    """GKD's generalized JSD per position (float64)."""

    def log_softmax(z):
        z = z.astype("float64") / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    p, q = np.exp(log_softmax(teacher_logits)), np.exp(log_softmax(student_logits))
    m = beta * p + (1 - beta) * q
    kl_pm = (p * (np.log(p) - np.log(m))).sum(-1)
    kl_qm = (q * (np.log(q) - np.log(m))).sum(-1)
    return (beta * kl_pm + (1 - beta) * kl_qm) * temperature**2


def expected_on_policy_loss(teacher, student, x, max_new_tokens, alpha, beta, t):
    """One on-policy step recomputed eagerly: keras-hub's own greedy
    `generate` of the student's continuations, both models' logits on
    them, GKD's divergence on the positions that predict a generated token
    (their mean), times 1 - alpha (an on-policy step has no labels)."""
    prompt = x["prompt_mask"].astype(bool)
    student.compile(sampler="greedy")
    generated = student.generate(
        {"token_ids": np.where(prompt, x["token_ids"], 0), "padding_mask": prompt},
        stop_token_ids=None,
    )["token_ids"]
    lengths = prompt.sum(1, keepdims=True)
    positions = np.arange(LENGTH)[None]
    new = ~prompt & (positions < lengths + max_new_tokens)
    mask = prompt | new
    view = {"token_ids": np.where(mask, generated, 0), "padding_mask": mask}
    values = gjsd(as_numpy(teacher(view)), as_numpy(student(view)), beta, t)
    counted = np.zeros_like(new)
    counted[:, :-1] = new[:, 1:]
    return (1 - alpha) * values[counted].mean(), view["token_ids"]


@pytest.mark.slow  # compiles a train step with generation (JAX: ~20 s)
def test_on_policy_steps_score_the_students_generations_with_its_current_weights():
    teacher, student = gpt2(16, 0, scale=3.0), gpt2(8, 1, scale=2.0)
    x, y, weights = batch()
    alpha, beta, temperature, max_new = 0.5, 0.3, 2.0, 4
    distiller = kd.CausalLMDistiller(
        teacher,
        student,
        kd.LogitsDistillation(
            temperature, loss="generalized_jsd", beta=beta, mask="padding_mask"
        ),
        student_loss_weight=alpha,
        lmbda=1.0,
        max_new_tokens=max_new,
    )
    distiller.compile(keras.optimizers.SGD(0.0), SPARSE_CE)  # weights kept
    losses, continuations = [], []
    for scale in (1.0, 3.0):  # the same weights, then others
        student.set_weights([w * scale for w in student.get_weights()])
        logs = distiller.train_on_batch(x, y, sample_weight=weights, return_dict=True)
        expected, tokens = expected_on_policy_loss(
            teacher, student, x, max_new, alpha, beta, temperature
        )
        np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
        assert logs["on_policy"] == 1.0
        step = distiller(x, training=True)  # the same view, eagerly
        np.testing.assert_array_equal(as_numpy(step.view["token_ids"]), tokens)
        losses.append(logs["loss"])
        continuations.append(tokens)
    assert not np.array_equal(*continuations)  # the new weights generate others
    assert abs(losses[0] - losses[1]) > 1e-3 * abs(losses[0])


@pytest.mark.slow  # compiles two keras-hub distillers (JAX: ~30 s)
def test_lmbda_zero_is_off_policy_token_kd():
    teacher, student = gpt2(16, 0, scale=3.0), gpt2(8, 1, scale=2.0)
    x, y, weights = batch(padding=3)
    plain_x = {k: v for k, v in x.items() if k != "prompt_mask"}
    initial = student.get_weights()
    results = []
    for make in (kd.CausalLMDistiller, None):
        student.set_weights(initial)
        loss = kd.LogitsDistillation(2.0, loss="reverse_kl", mask="padding_mask")
        if make is None:
            distiller = kd.Distiller(teacher, student, loss, student_loss_weight=0.3)
            inputs = plain_x
        else:
            distiller = make(teacher, student, loss, student_loss_weight=0.3, lmbda=0.0)
            inputs = x
        distiller.compile(keras.optimizers.SGD(0.5), SPARSE_CE)
        logs = distiller.train_on_batch(
            inputs, y, sample_weight=weights, return_dict=True
        )
        results.append((logs, student.get_weights()))
    (logs, updated), (expected_logs, expected) = results
    assert logs["on_policy"] == 0.0
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(logs[key], expected_logs[key], rtol=1e-6)
    for a, b, start in zip(updated, expected, initial):
        np.testing.assert_allclose(a - start, b - start, rtol=1e-5, atol=1e-8)
    assert max(np.abs(b - s).max() for b, s in zip(expected, initial)) > 1e-4


@pytest.mark.slow  # compiles two keras-hub distillers per case (JAX: ~1 min)
@pytest.mark.parametrize("lmbda", [0.0, 1.0], ids=["off_policy", "on_policy"])
def test_the_chunked_step_equals_the_full_logits(lmbda):
    teacher, student = gemma(16, 0, "teacher"), gemma(8, 1, "student")
    x, y, weights = batch(padding=2)
    initial = student.get_weights()
    results = []
    for chunk_size in (None, 3):
        student.set_weights(initial)
        distiller = kd.CausalLMDistiller(
            teacher,
            student,
            [
                kd.LogitsDistillation(
                    2.0, loss="generalized_jsd", mask="padding_mask", name="gjsd"
                ),
                kd.LogitsDistillation(1.0, loss="soft_cross_entropy", name="ce"),
            ],
            distillation_loss_weights=[1.0, 0.5],
            lmbda=lmbda,
            max_new_tokens=3,
            chunk_size=chunk_size,
        )
        distiller.compile(keras.optimizers.SGD(1.0), SPARSE_CE)
        logs = distiller.train_on_batch(x, y, sample_weight=weights, return_dict=True)
        results.append((logs, student.get_weights(), distiller))
    (full, full_weights, _), (chunked, chunked_weights, distiller) = results
    assert chunked.keys() == full.keys()
    for key in full:
        np.testing.assert_allclose(chunked[key], full[key], rtol=1e-5, atol=1e-7)
    for a, b, start in zip(chunked_weights, full_weights, initial):
        scale = np.abs(b - start).max()
        np.testing.assert_allclose(a - start, b - start, rtol=1e-5, atol=1e-5 * scale)
    if BACKEND == "jax":  # what XLA runs holds no (batch, positions, vocab) tensor
        shapes = _compiled_train_step_text(distiller, x, y, weights)
        assert f"f32[4,{LENGTH},{VOCAB}]" not in shapes
        assert f"f32[4,3,{VOCAB}]" in shapes  # a chunk's logits


def _compiled_train_step_text(distiller, x, y, weights):
    """The optimized HLO of the Distiller's JAX train step (Keras's own
    `train_step`, as `fit()` jits it)."""
    import jax

    state = (
        [v.value for v in distiller.trainable_variables],
        [v.value for v in distiller.non_trainable_variables],
        [v.value for v in distiller.optimizer.variables],
        [v.value for v in distiller.metrics_variables],
    )
    data = jax.tree.map(jax.numpy.asarray, (x, y, weights))
    return jax.jit(distiller.train_step).lower(state, data).compile().as_text()


@pytest.mark.slow  # compiles a train step with a random sampler (JAX: ~20 s)
def test_draws_and_a_random_samplers_seed_advance_with_the_step():
    teacher, student = gpt2(16, 0, scale=3.0), gpt2(8, 1, scale=2.0)
    x, y, weights = batch()
    distiller = kd.CausalLMDistiller(
        teacher,
        student,
        kd.LogitsDistillation(1.0, mask="padding_mask"),
        lmbda=0.5,
        sampler="random",
        sampling_temperature=2.0,
        seed=7,
    )
    distiller.compile(keras.optimizers.SGD(0.0), SPARSE_CE)
    (seed_state,) = distiller.sampler.variables
    assert any(v is seed_state for v in distiller.non_trainable_variables)
    start = as_numpy(seed_state).copy()
    repeated = {k: np.repeat(v, 8, axis=0) for k, v in x.items()}
    history = distiller.fit(
        repeated,
        np.repeat(y, 8, axis=0),
        sample_weight=np.repeat(weights, 8, axis=0),
        batch_size=1,
        verbose=0,
    ).history
    assert 0.2 < history["on_policy"][0] < 0.8  # 32 draws at lmbda = 0.5
    assert not np.array_equal(as_numpy(seed_state), start)
    distiller.lmbda = 1.0  # read by the same compiled step
    losses = [
        distiller.train_on_batch(x, y, sample_weight=weights, return_dict=True)
        for _ in range(3)
    ]
    assert losses[-1]["on_policy"] > history["on_policy"][0]
    values = [logs["distillation_loss"] for logs in losses]
    assert len(set(values)) > 1  # new samples at each step, same weights


@pytest.mark.slow  # generates eagerly with keras-hub models (JAX: ~10 s)
def test_generation_stops_and_is_bounded_and_batches_are_made():
    teacher, student = gpt2(16, 0, scale=3.0), gpt2(8, 1, scale=2.0)
    x, _, weights = batch()
    np.testing.assert_array_equal(
        weights[0], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    )  # the completion's tokens
    plain = kd.CausalLMDistiller(
        teacher, student, kd.LogitsDistillation(1.0), lmbda=1.0, max_new_tokens=5
    )
    generated = as_numpy(plain(x, training=True).view["token_ids"])
    stop = int(generated[0, PROMPT_LENGTHS[0]])  # the first generated token
    distiller = kd.CausalLMDistiller(
        teacher,
        student,
        kd.LogitsDistillation(1.0),
        lmbda=1.0,
        max_new_tokens=5,
        stop_token_ids=(stop,),
    )
    step = distiller(x, training=True)
    mask = as_numpy(step.view["padding_mask"]).astype(bool)
    counted = as_numpy(step.mixing["weights"])
    lengths = np.array(PROMPT_LENGTHS)
    assert mask[0].sum() == lengths[0] + 1  # the stop token ends it
    np.testing.assert_array_equal(counted[0], np.eye(LENGTH)[lengths[0] - 1])
    for row in range(1, 4):  # at most max_new_tokens each
        assert lengths[row] < mask[row].sum() <= lengths[row] + 5
        assert counted[row].sum() == mask[row].sum() - lengths[row]
    assert not as_numpy(step.view["token_ids"])[~mask].any()
    transfer = kd.generate_transfer_set(
        teacher,
        {
            "token_ids": np.where(x["prompt_mask"], x["token_ids"], 0)[:, :6],
            "padding_mask": x["prompt_mask"][:, :6],
        },
        max_length=LENGTH,
        shuffle=False,
        prompt_mask=True,
    )
    first, _, _ = next(transfer.as_numpy_iterator())
    np.testing.assert_array_equal(first["prompt_mask"], x["prompt_mask"][:, :-1])


@pytest.mark.slow  # builds five keras-hub models (JAX compiles each op: ~20 s)
def test_errors_before_training():
    teacher, student = gpt2(16, 0, scale=3.0), gpt2(8, 1, scale=2.0)
    loss = kd.LogitsDistillation(1.0)
    with pytest.raises(ValueError, match="one vocabulary"):
        kd.CausalLMDistiller(teacher, gpt2(8, 1, vocabulary=VOCAB + 1), loss)
    with pytest.raises(TypeError, match="keras-hub causal LM"):
        kd.CausalLMDistiller(teacher, student.backbone, loss)
    for lmbda in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"lmbda in \[0, 1\]"):
            kd.CausalLMDistiller(teacher, student, loss, lmbda=lmbda)
    distiller = kd.CausalLMDistiller(teacher, student, loss, max_new_tokens=3)
    distiller.compile("sgd", SPARSE_CE)
    x, y, weights = batch()
    no_prompts = {k: v for k, v in x.items() if k != "prompt_mask"}
    with pytest.raises(ValueError, match="prompts' padding mask"):
        distiller.fit(no_prompts, y, sample_weight=weights, verbose=0)
    shifted = dict(x, prompt_mask=np.roll(x["prompt_mask"], 1, axis=1))
    with pytest.raises(ValueError, match="left-aligned prefix"):
        distiller.fit(shifted, y, sample_weight=weights, verbose=0)
    with pytest.raises(ValueError, match=r"\(batch, positions\)"):
        distiller.fit(x, y, sample_weight=weights[:, 0], verbose=0)
    assert distiller.optimizer.iterations.numpy() == 0  # nothing trained
    chunked = kd.CausalLMDistiller(teacher, student, loss, chunk_size=4)
    with pytest.raises(ValueError, match="compiled metrics"):
        chunked.compile("sgd", SPARSE_CE, metrics=["accuracy"])
    with pytest.raises(ValueError, match="from_logits=True"):
        chunked.compile("sgd", keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match="top_k"):
        kd.CausalLMDistiller(
            teacher, student, kd.LogitsDistillation(1.0, top_k=4), chunk_size=4
        )
    with pytest.raises(TypeError, match="sampler"):
        kd.CausalLMDistiller(teacher, student, loss, sampler=3)
    with pytest.raises(ValueError, match="no `augmentation`"):
        kd.CausalLMDistiller(
            teacher, student, loss, augmentation=keras.layers.Identity()
        )


@pytest.mark.slow  # saves and evaluates keras-hub distillers (JAX: ~20 s)
def test_config_and_keras_round_trip(tmp_path):
    teacher, student = gemma(16, 0, "teacher"), gemma(8, 1, "student")
    x, y, weights = batch()
    distiller = kd.CausalLMDistiller(
        teacher,
        student,
        kd.LogitsDistillation(1.0, loss="reverse_kl", mask="padding_mask"),
        student_loss_weight=0.2,
        lmbda=0.25,
        max_new_tokens=3,
        sampler=keras_hub.samplers.TopKSampler(k=3),
        sampling_temperature=0.7,
        stop_token_ids=[5],
        chunk_size=4,
        seed=3,
    )
    distiller.compile("sgd", SPARSE_CE)
    expected = distiller.evaluate(x, y, sample_weight=weights, verbose=0)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    assert isinstance(loaded, kd.CausalLMDistiller)
    config = loaded.get_config()
    assert config == distiller.get_config()
    assert config["sampler"]["config"] == {"temperature": 0.7, "k": 3, "seed": 3}
    assert float(loaded.lmbda) == 0.25 and loaded.stop_token_ids == (5,)
    np.testing.assert_allclose(
        loaded.evaluate(x, y, sample_weight=weights, verbose=0), expected, rtol=1e-6
    )
    inputs = {k: x[k] for k in ("token_ids", "padding_mask")}
    predicted = loaded.predict(inputs, verbose=0)
    assert predicted.shape == (4, LENGTH, VOCAB)  # the student's logits
    with pytest.raises(ValueError, match="cached teacher outputs"):
        loaded.fit(kd.cache_teacher_outputs(teacher, inputs, batch_size=4))
