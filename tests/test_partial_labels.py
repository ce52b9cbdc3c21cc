"""Labeled and unlabeled inputs in one fit(): partial labels
(`kd.partial_labels`) and `kd.data.labeled_and_unlabeled`. The student loss
is the mean over the labeled samples, the distillation loss the mean over
every sample, the compiled metrics see the labeled samples only."""

import keras
import numpy as np
import pytest
from conftest import float_logs
from conftest import make_classifier

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RNG = np.random.default_rng(5)
X = RNG.normal(size=(48, 6)).astype("float32")
Y = RNG.integers(0, 3, 48).astype("int32")
HAS_LABEL = (np.arange(48) % 3 == 0).astype("float32")  # 16 labeled


def make_distiller(alpha=0.4, **kwargs):
    teacher = make_classifier(16, name="teacher")
    student = make_classifier(4, name="student")
    return kd.Distiller(
        teacher,
        student,
        kd.LogitsDistillation(2.0),
        student_loss_weight=alpha,
        **kwargs,
    )


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def numpy_terms(distiller, x, y, sample_weight=None, temperature=2.0):
    """Per-sample cross-entropy and Hinton KL, in float64."""
    t = distiller.teacher.predict(x, verbose=0).astype("float64")
    s = distiller.student.predict(x, verbose=0).astype("float64")
    ce = -log_softmax(s)[np.arange(len(y)), y]
    log_t, log_s = log_softmax(t / temperature), log_softmax(s / temperature)
    kl = (np.exp(log_t) * (log_t - log_s)).sum(-1) * temperature**2
    weights = np.ones(len(y)) if sample_weight is None else sample_weight
    return ce * weights, kl * weights


def evaluate(distiller, x, y, **kwargs):
    return float_logs(
        distiller.evaluate(
            x, y, batch_size=len(x), verbose=0, return_dict=True, **kwargs
        )
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_matches_numpy(weighted):
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE)
    sample_weight = RNG.uniform(0.5, 2.0, 48).astype("float32") if weighted else None
    logs = evaluate(
        distiller, X, kd.partial_labels(Y, HAS_LABEL), sample_weight=sample_weight
    )
    ce, kl = numpy_terms(distiller, X, Y, sample_weight)
    student = ce[HAS_LABEL > 0].sum() / HAS_LABEL.sum()  # mean over the labeled
    distillation = kl.mean()  # mean over every sample
    assert logs["student_loss"] == pytest.approx(student, rel=1e-4)
    assert logs["distillation_loss"] == pytest.approx(distillation, rel=1e-4)
    assert logs["loss"] == pytest.approx(0.4 * student + 0.6 * distillation, rel=1e-4)


def test_a_batch_without_labeled_samples_has_a_student_term_of_zero():
    distiller = make_distiller()
    distiller.compile("sgd", SPARSE_CE)
    none = kd.partial_labels(Y, np.zeros(48, "float32"))
    logs = evaluate(distiller, X, none)
    _, kl = numpy_terms(distiller, X, Y)
    assert logs["loss"] == pytest.approx(0.6 * kl.mean(), rel=1e-4)
    history = distiller.fit(X, none, batch_size=48, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    for weight in distiller.student.get_weights():
        assert np.all(np.isfinite(weight))


def test_metrics_see_the_labeled_samples_only():
    distiller = make_distiller()
    distiller.compile(
        "adam", SPARSE_CE, metrics=["accuracy"], weighted_metrics=["accuracy"]
    )
    predicted = np.argmax(distiller.student.predict(X, verbose=0), -1)
    wrong = np.where(HAS_LABEL > 0, Y, (predicted + 1) % 3)  # placeholders wrong
    logs = evaluate(distiller, X, kd.partial_labels(wrong, HAS_LABEL))
    expected = np.mean((predicted == Y)[HAS_LABEL > 0])
    assert logs["accuracy"] == pytest.approx(expected)
    assert logs["weighted_accuracy"] == pytest.approx(expected)


def test_labeled_and_unlabeled_batches_hold_the_chosen_share():
    x_labeled, y_labeled = X[:12], Y[:12]
    data = kd.data.labeled_and_unlabeled(
        (x_labeled, y_labeled), X[12:], labeled_fraction=0.25, batch_size=8, seed=1
    )
    batches = list(data.as_numpy_iterator())
    assert len(batches) == len(data) == 6  # 36 unlabeled, 6 a batch
    seen = set()
    for x, y in batches:
        has_label = y["has_label"]
        assert x.shape == (8, 6) and has_label.sum() == 2
        labeled = x[has_label > 0]
        for row, label in zip(labeled, y["labels"][has_label > 0]):
            index = int(np.flatnonzero((x_labeled == row).all(-1))[0])
            assert label == y_labeled[index]  # rows keep their labels
        seen.update(map(bytes, x[has_label == 0]))
    assert seen == set(map(bytes, X[12:]))  # every unlabeled input once or more


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: kd.data.labeled_and_unlabeled((X, Y), X, 1.0),
            ValueError,
            r"\(0, 1\)",
        ),
        (
            lambda: kd.data.labeled_and_unlabeled((X, Y), X, 0.0),
            ValueError,
            r"\(0, 1\)",
        ),
        (
            lambda: kd.data.labeled_and_unlabeled((X[:0], Y[:0]), X),
            ValueError,
            "hold samples",
        ),
        (
            lambda: kd.data.labeled_and_unlabeled((X, Y), X[:0]),
            ValueError,
            "hold samples",
        ),
        (
            lambda: kd.data.labeled_and_unlabeled((X, Y[:5]), X),
            ValueError,
            "one y entry per labeled input",
        ),
        (
            lambda: kd.data.labeled_and_unlabeled((X, Y), X[:, :4]),
            ValueError,
            "same shape per sample",
        ),
        (lambda: kd.data.labeled_and_unlabeled(X, X), TypeError, r"\(x, y\)"),
        (lambda: kd.partial_labels(Y, HAS_LABEL[:5]), ValueError, "one `has_label`"),
    ],
)
def test_bad_input_is_refused_before_training(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_negative_labels_name_the_documented_way():
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE)
    unlabeled_as_minus_one = np.where(HAS_LABEL > 0, Y, -1)
    with pytest.raises(ValueError, match="kerasdistill.partial_labels"):
        distiller.fit(X, unlabeled_as_minus_one, epochs=1, verbose=0)


def test_batches_with_and_without_labels_name_the_documented_way():
    class Mixed(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            rows = slice(12 * index, 12 * index + 12)
            return (X[rows], Y[rows]) if index % 2 == 0 else (X[rows],)

    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE)
    with pytest.raises(Exception, match="kerasdistill.data.labeled_and_unlabeled"):
        distiller.fit(Mixed(), epochs=1, verbose=0)


def test_fit_trains_with_cache_augmentation_and_a_schedule():
    data = kd.data.labeled_and_unlabeled((X[:16], Y[:16]), X[16:], batch_size=16)
    distiller = make_distiller()
    distiller.compile("adam", SPARSE_CE, metrics=["accuracy"])
    schedule = kd.callbacks.AlphaScheduler(kd.schedules.Linear(0.8, 0.2, steps=2))
    history = distiller.fit(
        data, epochs=3, verbose=0, validation_data=(X, Y), callbacks=[schedule]
    ).history
    assert history["alpha"] == pytest.approx([0.8, 0.5, 0.2])
    assert history["loss"][-1] < history["loss"][0]
    assert {"student_loss", "accuracy", "val_accuracy"} <= set(history)

    partial = kd.partial_labels(Y, HAS_LABEL)
    cached = kd.cache_teacher_outputs(
        distiller.teacher,
        (X, partial),
        distiller.distillation_losses,
        batch_size=16,
        shuffle=False,
    )
    logs = float_logs(distiller.evaluate(cached, verbose=0, return_dict=True))
    live = float_logs(
        distiller.evaluate(X, partial, batch_size=16, verbose=0, return_dict=True)
    )
    assert logs["student_loss"] == pytest.approx(live["student_loss"], rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(
        live["distillation_loss"], rel=1e-5
    )

    noisy = make_distiller(augmentation=keras.layers.GaussianNoise(0.1, seed=1))
    noisy.compile("adam", SPARSE_CE)
    assert np.isfinite(noisy.fit(data, epochs=1, verbose=0).history["loss"][0])


def test_mixup_mixes_the_labels_and_the_mask():
    """A mixed sample has a label when both samples it mixes have one."""
    one_hot = keras.utils.to_categorical(Y, 3).astype("float32")
    mixing = keras.layers.MixUp(0.4, seed=3)
    view = kd.augmentation.TrainingView(None, mixing, make_classifier(4))
    labels, has_label = view.mix_labels(
        keras.ops.convert_to_tensor(one_hot),
        keras.ops.convert_to_tensor(HAS_LABEL),
        {
            "mix_weight": keras.ops.full((48,), 0.25),
            "permutation_order": keras.ops.convert_to_tensor(np.roll(np.arange(48), 1)),
        },
    )
    expected = 0.25 * one_hot + 0.75 * np.roll(one_hot, 1, axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(labels), expected, atol=1e-6)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(has_label), HAS_LABEL * np.roll(HAS_LABEL, 1)
    )
    distiller = make_distiller(mixing=mixing)
    distiller.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    history = distiller.fit(
        X, kd.partial_labels(one_hot, HAS_LABEL), epochs=2, batch_size=16, verbose=0
    ).history
    assert np.all(np.isfinite(history["loss"]))


def test_a_loss_that_reads_labels_is_refused_with_partial_labels():
    teacher = make_classifier(16, name="teacher")
    distiller = kd.Distiller(teacher, make_classifier(4, name="student"), kd.DKD())
    distiller.compile("adam", SPARSE_CE)
    with pytest.raises(ValueError, match="partial labels"):
        distiller.fit(X, kd.partial_labels(Y, HAS_LABEL), epochs=1, verbose=0)
