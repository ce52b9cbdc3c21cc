"""The labels of a batch: whether data has any, partial labels (a labeled
and an unlabeled set trained together), and the student's loss on them.

Partial labels. A batch may mix samples with and without a label. Its `y`
is then the dict `{"labels": y, "has_label": mask}` (`partial_labels` makes
it; `kerasdistill.data.labeled_and_unlabeled` yields it), where `mask` is
`(batch,)`, 1 for a labeled sample and 0 for an unlabeled one, whose label
is a placeholder of the right shape and dtype. Then:

- the student loss is the mean over the batch's labeled samples (weighted
  by `sample_weight`, divided by their count; 0 for a batch without any);
- the distillation loss is the mean over every sample;
- the compiled metrics see the labeled samples only.
"""

import keras
import numpy as np
from keras import ops
from keras import tree

from kerasdistill import _keras_internals
from kerasdistill import reduction

LABELS = "labels"
HAS_LABEL = "has_label"

DOCUMENTED_WAY = (
    "To train on labeled and unlabeled inputs together, give the labels as "
    "kerasdistill.partial_labels(y, has_label) (has_label: 1 for a labeled "
    "sample, 0 for an unlabeled one), or build the dataset with "
    "kerasdistill.data.labeled_and_unlabeled(labeled=(x, y), unlabeled=x_u, "
    "labeled_fraction=..., batch_size=...)."
)


def partial_labels(y, has_label):
    """The labels of a batch in which only some samples have one.

    Args:
        y: The labels, one per sample (any placeholder where there is none,
            of the labels' shape and dtype).
        has_label: `(samples,)`: 1 (or True) where the sample has a label,
            0 where it has none.

    Returns:
        The dict `{"labels": y, "has_label": has_label}`, what `fit()` takes
        as `y`.

    Example:

    ```python
    y = np.concatenate([y_labeled, np.zeros(len(x_unlabeled), "int32")])
    has_label = np.concatenate(
        [np.ones(len(y_labeled)), np.zeros(len(x_unlabeled))]
    )
    distiller.fit(
        np.concatenate([x_labeled, x_unlabeled]),
        kerasdistill.partial_labels(y, has_label),
        epochs=10,
    )
    ```
    """
    for name, value in ((LABELS, y), (HAS_LABEL, has_label)):
        if value is None or not hasattr(value, "shape"):
            raise TypeError(
                f"Expected `{name}` to be an array or tensor. Received: "
                f"{name}={value!r}"
            )
    if len(has_label.shape) != 1:
        raise ValueError(
            "Expected `has_label` of shape (samples,). Received shape "
            f"{tuple(has_label.shape)}."
        )
    samples = tree.flatten(y)[0].shape[0]
    if samples is not None and has_label.shape[0] not in (None, samples):
        raise ValueError(
            f"Expected one `has_label` entry per label. Received {samples} "
            f"labels and has_label of shape {tuple(has_label.shape)}."
        )
    return {LABELS: y, HAS_LABEL: has_label}


def is_partial(y):
    """Whether `y` (labels, or their spec) holds partial labels."""
    return isinstance(y, dict) and set(y) == {LABELS, HAS_LABEL}


def split(y, sample_weight=None):
    """`(labels, has_label, sample_weight)`: the labels and the float32
    `(batch,)` mask of partial labels, else `(y, None, sample_weight)`
    (every sample labeled, or no labels). Keras gives arrays of sample
    weights once per entry of a dict `y`; they are taken once."""
    if not is_partial(y):
        return y, None, sample_weight
    if is_partial(sample_weight):
        sample_weight = sample_weight[LABELS]
    has_label = ops.cast(ops.reshape(y[HAS_LABEL], (-1,)), "float32")
    return y[LABELS], has_label, sample_weight


def data_has_labels(x, y):
    """Whether the data given to `fit(x, y)` has labels: `True` / `False`
    when that can be told without reading it (`y` given, a
    `tf.data.Dataset` from its element spec), `None` otherwise (a
    generator or a `keras.utils.PyDataset`)."""
    if y is not None:
        return True
    spec = getattr(x, "element_spec", None)
    if spec is None:
        return False if _is_arrays(x) else None
    return isinstance(spec, tuple) and len(spec) >= 2 and spec[1] is not None


def _is_arrays(x):
    return all(
        hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in tree.flatten(x)
    )


def require_labels(y, what):
    """Raises a `ValueError` for a batch without labels; `what` says what
    learns from them and how."""
    if y is None:
        raise ValueError(
            f"Expected batches with labels: {what}. Received a batch without "
            "labels. Pass `y` to fit() / evaluate(), or a dataset of (x, y) "
            "pairs."
        )


def require_compile_loss(loss, why):
    """Raises a `ValueError` when `compile()` got no `loss`; `why` says what
    the model trains on the labels."""
    if loss is None:
        raise ValueError(
            f"Expected compile() to be given the labels' loss: {why}. "
            "Received compile() without `loss`. Pass e.g. "
            "loss=keras.losses.SparseCategoricalCrossentropy("
            'from_logits=True) or loss="mse".'
        )


def check_label_values(y, loss):
    """Refuses negative integer labels for a sparse categorical loss before
    training: a `-1` meant as "no label" fails inside the backend, so the
    message names the documented way."""
    if y is None or is_partial(y) or not _is_sparse_categorical(loss):
        return
    for labels in tree.flatten(y):
        if not hasattr(labels, "dtype") or not hasattr(labels, "shape"):
            continue
        values = np.asarray(labels)
        if np.issubdtype(values.dtype, np.integer) and values.size and values.min() < 0:
            raise ValueError(
                "Expected class indices >= 0 for the student's "
                f"{type(loss).__name__}. Received labels with the value "
                f"{values.min()}. {DOCUMENTED_WAY}"
            )


def _is_sparse_categorical(loss):
    return isinstance(loss, keras.losses.SparseCategoricalCrossentropy) or loss in (
        "sparse_categorical_crossentropy",
        keras.losses.sparse_categorical_crossentropy,
    )


def check_student_loss(loss, alpha):
    """Refuses labels to learn from (`alpha` > 0) without a compiled `loss`."""
    if loss is None and alpha > 0:
        raise ValueError(
            "Received labels, but compile() was given no `loss` for "
            f"the student while student_loss_weight={alpha}. Pass a "
            "loss to compile() (e.g. loss=keras.losses."
            "SparseCategoricalCrossentropy(from_logits=True)), set "
            "student_loss_weight=0, or fit on inputs without labels."
        )


def student_loss(model, y, outputs, sample_weight, has_label=None):
    """`label_loss`, or `(0, batch size)` when `model` was compiled without
    a `loss` (allowed with alpha 0).

    Example:

    ```python
    loss, count = kerasdistill.labels.student_loss(
        distiller, y, distiller.student(x), None
    )
    ```
    """
    if model.loss is None:
        return ops.zeros((), dtype="float32"), reduction.batch_size(outputs)
    return label_loss(model, y, outputs, sample_weight, has_label)


def label_loss(model, y, y_pred, sample_weight, has_label=None):
    """`(loss, count)`: `model`'s compiled loss on the labels in float32,
    without the regularization losses that Keras's `compute_loss` adds,
    and the number of labeled samples it averages over (per replica
    of a `tf.distribute` strategy, as a loss tracker weighs it).

    Without `has_label`, Keras's own reduction (`sum_over_batch_size`).
    With it, the mean over the labeled samples of the batch (of the global
    batch under a `tf.distribute` strategy), 0 where none is labeled.

    Example:

    ```python
    loss, count = kerasdistill.labels.label_loss(
        distiller, y, distiller.student(x), None
    )
    ```
    """
    if has_label is None:
        total = _keras_internals.compiled_loss(model, y, y_pred, sample_weight)
        return ops.cast(total, "float32"), reduction.batch_size(y_pred)
    weights = has_label
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        weights = sample_weight * ops.reshape(
            has_label, (-1, *[1] * (len(sample_weight.shape) - 1))
        )
    total = _keras_internals.compiled_loss(model, y, y_pred, weights)
    batch_mean = ops.cast(total, "float32")
    return reduction.mean_over_labeled(
        batch_mean, reduction.batch_size(y_pred), has_label
    )


def for_metrics(y_pred, has_label):
    """`y_pred` with the unlabeled samples masked out of the compiled
    metrics (Keras's output mask, which its metrics honour whether or not
    they are weighted); `y_pred` itself without `has_label`."""
    if has_label is None:
        return y_pred
    mask = ops.cast(has_label, "bool")
    return tree.map_structure(
        lambda output: _keras_internals.with_keras_mask(ops.copy(output), mask),
        y_pred,
    )


def check_reads_labels(loss, has_label):
    """Refuses a distillation loss that reads every sample's label (its
    `call` takes `y_true`, like `DKD`) on a batch with partial labels
    (`has_label` not `None`): it would read the placeholders as labels."""
    if has_label is not None and "y_true" in loss._call_arguments:
        raise ValueError(
            f"{type(loss).__name__} reads the labels of every sample, but the "
            "batch has partial labels (some samples without one), whose "
            "placeholders it would read as labels. Train it on labeled data, "
            "or use a loss that needs no labels (e.g. "
            "kerasdistill.LogitsDistillation) with partial labels."
        )
