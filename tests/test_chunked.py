"""Token distillation over chunks of positions from hidden states: the loss
and its gradients equal those of the full logits, for every divergence,
with padding and a logit soft-cap; no `(batch, positions, vocabulary)`
tensor is formed (JAX's trace); the class form finds the projections in
keras-hub models and serializes."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import as_numpy
from conftest import make_gemma_lm

import kerasdistill as kd

BATCH, POSITIONS, VOCAB, CHUNK = 2, 10, 50, 4
MASK = np.array([[1] * 10, [1] * 6 + [0] * 4], "int32")
CASES = [
    ("kl_divergence", {}),
    ("reverse_kl", {}),
    ("generalized_jsd", {"beta": 0.3}),
    ("skew_kl", {"skew": 0.1}),
    ("skew_reverse_kl", {"skew": 0.2}),
    ("tvd", {}),
]


def embeddings():
    keras.utils.set_random_seed(0)
    teacher = keras.layers.ReversibleEmbedding(VOCAB, 12, logit_soft_cap=5.0)
    student = keras.layers.ReversibleEmbedding(VOCAB, 8)
    teacher.build((None,))
    student.build((None,))
    return teacher, student


def hidden_states():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(BATCH, POSITIONS, 12)).astype("float32")
    student = (3.0 * rng.normal(size=(BATCH, POSITIONS, 8))).astype("float32")
    return teacher, student


def loss_and_gradients(compute, hidden, variables):
    """`compute(hidden)` (a scalar) and its gradients with respect to
    `hidden` and `variables`, read as the backend's trainer reads them."""
    if BACKEND == "jax":
        import jax

        def with_values(hidden_, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return compute(hidden_)

        step = jax.jit(jax.value_and_grad(with_values, argnums=(0, 1)))
        value, (hidden_gradient, gradients) = step(hidden, [v.value for v in variables])
        return as_numpy(value), [as_numpy(hidden_gradient), *map(as_numpy, gradients)]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensor = tf.constant(hidden)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = compute(tensor)
        gradients = tape.gradient(value, [tensor, *variables])
    else:
        import torch

        tensor = torch.tensor(hidden, requires_grad=True)
        value = compute(tensor)
        gradients = torch.autograd.grad(value, [tensor, *(v.value for v in variables)])
    return as_numpy(value), [as_numpy(g) for g in gradients]


@pytest.mark.parametrize("loss, options", CASES, ids=[c[0] for c in CASES])
def test_loss_and_gradients_equal_the_full_logits(loss, options):
    teacher_embedding, student_embedding = embeddings()
    teacher_hidden, student_hidden = hidden_states()
    temperature = 2.0

    def teacher_projection(h):
        return teacher_embedding(h, reverse=True)

    def student_projection(h):
        return student_embedding(h, reverse=True)

    def chunked(hidden):
        return keras.ops.mean(
            kd.losses.chunked_token_divergence(
                teacher_hidden,
                hidden,
                teacher_projection,
                student_projection,
                mask=MASK,
                loss=loss,
                temperature=temperature,
                chunk_size=CHUNK,
                **options,
            )
        )

    full_loss = kd.LogitsDistillation(temperature, loss=loss, mask="m", **options)

    def full(hidden):
        return full_loss.compute_loss(
            teacher_projection(teacher_hidden),
            student_projection(hidden),
            inputs={"m": MASK},
        )

    variables = [student_embedding.embeddings]
    value, gradients = loss_and_gradients(chunked, student_hidden, variables)
    expected, expected_gradients = loss_and_gradients(full, student_hidden, variables)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    for gradient, reference in zip(gradients, expected_gradients):
        scale = np.abs(reference).max()
        np.testing.assert_allclose(gradient, reference, rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(gradients[0][1, 6:]).max() == 0.0  # padded positions


def test_chunks_of_any_size_and_no_mask_give_the_same_loss():
    teacher_embedding, student_embedding = embeddings()
    teacher_hidden, student_hidden = hidden_states()
    teacher_logits = teacher_embedding(teacher_hidden, reverse=True)
    student_logits = student_embedding(student_hidden, reverse=True)
    expected = as_numpy(
        kd.LogitsDistillation(1.0, loss="reverse_kl").per_sample_loss(
            teacher_logits, student_logits
        )
    )
    for chunk_size in (1, 3, POSITIONS, 64):
        got = kd.losses.chunked_token_divergence(
            teacher_hidden,
            student_hidden,
            lambda h: teacher_embedding(h, reverse=True),
            lambda h: student_embedding(h, reverse=True),
            loss="reverse_kl",
            chunk_size=chunk_size,
        )
        np.testing.assert_allclose(as_numpy(got), expected, rtol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="reads JAX's trace of the step")
def test_no_full_logits_tensor_is_formed():
    import jax

    teacher_embedding, student_embedding = embeddings()
    teacher_hidden, student_hidden = hidden_states()
    variable = student_embedding.embeddings

    def step(hidden, kernel, chunk_size):
        def loss(hidden_, kernel_):
            with keras.StatelessScope(state_mapping=[(variable, kernel_)]):
                return keras.ops.mean(
                    kd.losses.chunked_token_divergence(
                        teacher_hidden,
                        hidden_,
                        lambda h: teacher_embedding(h, reverse=True),
                        lambda h: student_embedding(h, reverse=True),
                        mask=MASK,
                        chunk_size=chunk_size,
                    )
                )

        return jax.value_and_grad(loss, argnums=(0, 1))(hidden, kernel)

    def largest_vocabulary_tensor(chunk_size):
        jaxpr = jax.make_jaxpr(lambda h, k: step(h, k, chunk_size))(
            student_hidden, as_numpy(variable)
        )
        return max(  # the (batch, positions, vocabulary) tensors
            int(np.prod(v.aval.shape))
            for v in _all_variables(jaxpr.jaxpr)
            if len(getattr(v.aval, "shape", ())) == 3 and v.aval.shape[-1] == VOCAB
        )

    assert largest_vocabulary_tensor(CHUNK) == BATCH * CHUNK * VOCAB
    assert largest_vocabulary_tensor(POSITIONS) == BATCH * POSITIONS * VOCAB


def _all_variables(jaxpr):
    """Every variable a jaxpr (and the jaxprs inside it) binds."""
    for equation in jaxpr.eqns:
        yield from equation.outvars
        for parameter in equation.params.values():
            inner = getattr(parameter, "jaxpr", parameter)
            if hasattr(inner, "eqns"):
                yield from _all_variables(inner)


def test_bad_arguments_are_refused():
    teacher_hidden, student_hidden = hidden_states()

    def project(h):
        return h

    with pytest.raises(ValueError, match="one of"):
        kd.losses.chunked_token_divergence(
            teacher_hidden, student_hidden, project, project, loss="cross_entropy"
        )
    with pytest.raises(ValueError, match="chunk_size >= 1"):
        kd.losses.chunked_token_divergence(
            teacher_hidden, student_hidden, project, project, chunk_size=0
        )
    with pytest.raises(ValueError, match="same number of positions"):
        kd.losses.chunked_token_divergence(
            teacher_hidden, student_hidden[:, :4], project, project
        )
    with pytest.raises(ValueError, match="option of loss='generalized_jsd'"):
        kd.losses.chunked_token_divergence(
            teacher_hidden, student_hidden, project, project, beta=0.5
        )
    with pytest.raises(ValueError, match="prepare"):
        kd.losses.ChunkedTokenDistillation("a", "b").per_sample_loss(
            teacher_hidden, student_hidden
        )
    with pytest.raises(TypeError, match="teacher_projection"):
        kd.losses.ChunkedTokenDistillation("a", "b", teacher_projection=None)


keras_hub = pytest.importorskip("keras_hub")


def gemma(width, seed, name):
    return make_gemma_lm(width, seed, name, VOCAB)


@pytest.mark.slow  # compiles keras-hub distillers (JAX: about a minute)
def test_the_class_in_a_distiller_equals_token_kd_and_round_trips(tmp_path):
    teacher, student = gemma(16, 0, "teacher"), gemma(8, 1, "student")
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, VOCAB, (4, POSITIONS)).astype("int32"),
        "padding_mask": np.repeat(MASK, 2, axis=0),
    }
    chunked = kd.losses.ChunkedTokenDistillation(
        "teacher_backbone",
        "student_backbone",
        loss="generalized_jsd",
        temperature=2.0,
        mask="padding_mask",
        chunk_size=CHUNK,
    )
    full = kd.LogitsDistillation(2.0, loss="generalized_jsd", mask="padding_mask")
    initial = student.get_weights()
    values, updated = [], []
    for loss in (chunked, full):
        student.set_weights(initial)
        distiller = kd.Distiller(teacher, student, loss)
        distiller.compile(keras.optimizers.SGD(1.0))
        values.append(distiller.evaluate(x, batch_size=4, verbose=0))
        distiller.fit(x, batch_size=4, epochs=1, verbose=0)  # one step
        updated.append(student.get_weights())
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5)
    # The same gradients through the backend's own train step.
    for a, b, start in zip(*updated, initial):
        np.testing.assert_allclose(a - start, b - start, rtol=1e-4, atol=1e-7)
    assert max(np.abs(b - s).max() for b, s in zip(updated[1], initial)) > 1e-4
    student.set_weights(initial)
    distiller = kd.Distiller(teacher, student, chunked)
    distiller.compile("sgd")
    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    assert loaded.distillation_losses[0].get_config() == chunked.get_config()
    np.testing.assert_allclose(
        loaded.evaluate(x, batch_size=4, verbose=0), values[0], rtol=1e-5
    )
    with pytest.raises(ValueError, match="ReversibleEmbedding"):
        kd.losses.ChunkedTokenDistillation(
            "teacher_backbone",
            "student_backbone",
            teacher_projection="teacher_backbone",
        ).prepare(teacher, student)
