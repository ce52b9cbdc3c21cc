"""The classic feature-distillation losses, one per-sample function each.

Each function takes the teacher's and the student's features (batch first)
and returns one value per sample, shape `(batch,)`, whose mean over the batch
is the loss. `kerasdistill.FeatureDistillation(loss="name")` uses them.

The relational losses (`similarity_preserving`, `rkd_distance`,
`rkd_angle`, `pkt`) compare the samples of a batch with each other. Their
paper's loss is a sum over rows (or pairs, or triplets) of the batch; each
function returns, for sample `i`, the terms anchored at `i` (row `i` of the
similarity matrix, the pairs and the angles with vertex `i`), scaled so that
their mean over the batch is the loss. `sample_weight` then weights each
sample's anchored terms; the statistics the paper normalizes by (the mean
distance of RKD, the row norms of SP, the PKT normalization) are taken over
the whole batch, unweighted. They need a batch of at least 2 (3 for
`rkd_angle`): a smaller batch raises an error, except under XLA
(`jit_compile=True`, the Keras default on GPUs), which drops run-time
checks; there such a batch contributes 0.
"""

import keras
from keras import ops

_EPSILON = 1e-12


def hint_mse(teacher, student):
    """FitNets hint loss, averaged over the feature's elements.

    The paper's hint loss is `1/2 ||u_h(x) - r(v_g(x))||^2` with `r` the
    regressor (here the adapter); this returns the mean of the squared
    differences over every non-batch axis, i.e. the paper's loss times
    `2 / n` for `n` elements, so its scale does not grow with the feature's
    size.

    Args:
        teacher: Teacher features `(batch, ...)`.
        student: Student features, same shape (after the adapter).

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.hint_mse(t, s)
    ```

    Reference:
        Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015
        (eq. 3). https://arxiv.org/abs/1412.6550
    """
    return ops.mean(ops.square(_flat(student) - _flat(teacher)), axis=-1)


def cosine_distance(teacher, student):
    """`1 - cos(t, s)` between the flattened features of each sample: a
    hint that matches the feature's direction, not its scale.

    Args:
        teacher: Teacher features `(batch, ...)`.
        student: Student features, same shape (after the adapter).

    Returns:
        A tensor of shape `(batch,)`, in [0, 2].

    Example:

    ```python
    kerasdistill.losses.cosine_distance(t, s)
    ```

    Reference:
        The FitNets hint (Romero et al., ICLR 2015) with the cosine distance
        in place of the squared distance.
    """
    t, s = _l2_normalize(_flat(teacher)), _l2_normalize(_flat(student))
    return 1.0 - ops.sum(t * s, axis=-1)


def attention_transfer(teacher, student, p=2):
    """Attention transfer: `|| Q_s / ||Q_s|| - Q_t / ||Q_t|| ||_2`.

    `Q = vec(sum_c |A_c|^p)` is the spatial attention map of a feature map
    `A` (channels last), summed over channels, so the channels of teacher
    and student need not match; their positions must.

    This is the paper's eq. 2 without its `beta / 2` factor (a loss
    weight); the authors' code uses the mean squared difference of the
    normalized maps with `beta = 1000` instead.

    Args:
        teacher: Teacher feature maps `(batch, ..., channels)`, rank >= 3.
        student: Student feature maps, same positions.
        p: The exponent of the attention map. Defaults to 2 (the paper's).

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.attention_transfer(t_maps, s_maps)
    ```

    Reference:
        Zagoruyko & Komodakis, "Paying More Attention to Attention:
        Improving the Performance of Convolutional Neural Networks via
        Attention Transfer", ICLR 2017. https://arxiv.org/abs/1612.03928
    """
    q_t = _l2_normalize(_flat(_attention_map(teacher, p)))
    q_s = _l2_normalize(_flat(_attention_map(student, p)))
    return _safe_norm(q_s - q_t)


def similarity_preserving(teacher, student):
    """Similarity-preserving KD: `1/b^2 ||G~_t - G~_s||_F^2`.

    `G = Q Q^T` is the `b x b` matrix of the batch's pairwise similarities
    (`Q` the features flattened per sample) and `G~` is `G` with each row
    L2-normalized. Sample `i` gets `||G~_t[i] - G~_s[i]||^2 / b`, its row's
    share, so the mean over the batch is the paper's loss. Shapes of
    teacher and student need not match.

    Args:
        teacher: Teacher features `(batch, ...)`, batch >= 2.
        student: Student features `(batch, ...)`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.similarity_preserving(t, s)
    ```

    Reference:
        Tung & Mori, "Similarity-Preserving Knowledge Distillation",
        ICCV 2019 (eqs. 2-4). https://arxiv.org/abs/1907.09682
    """
    student = require_batch(student, 2, "similarity_preserving")
    g_t = _l2_normalize(_gram_of_batch(teacher))
    g_s = _l2_normalize(_gram_of_batch(student))
    batch = ops.cast(ops.shape(g_t)[0], "float32")
    return ops.sum(ops.square(g_t - g_s), axis=-1) / batch


def rkd_distance(teacher, student, delta=1.0):
    """Relational KD, distance-wise: Huber loss between the normalized
    pairwise distances `psi_D(i, j) = ||x_i - x_j|| / mu` of teacher and
    student, `mu` the mean distance over the batch's pairs `i != j`.

    Sample `i` gets the mean over `j != i` of `huber(psi_s - psi_t)`: the
    mean over the batch is the mean over all ordered pairs (the paper sums
    over them; its authors' code averages). Shapes need not match.

    Args:
        teacher: Teacher features (flattened per sample), batch >= 2.
        student: Student features.
        delta: The Huber threshold. Defaults to 1.0 (the paper's).

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.rkd_distance(t, s)
    ```

    Reference:
        Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019
        (eqs. 4-5). https://arxiv.org/abs/1904.05068
    """
    student = require_batch(student, 2, "rkd_distance")
    psi_t = _normalized_distances(_flat(teacher))
    psi_s = _normalized_distances(_flat(student))
    off_diagonal = 1.0 - ops.eye(ops.shape(psi_t)[0], dtype="float32")
    huber = _huber(psi_s - psi_t, delta) * off_diagonal
    return ops.sum(huber, axis=-1) / ops.maximum(ops.sum(off_diagonal, axis=-1), 1.0)


def rkd_angle(teacher, student, delta=1.0):
    """Relational KD, angle-wise: Huber loss between the cosines
    `psi_A(i, j, k) = <e_ij, e_kj>` of the angles the batch's samples form,
    `e_ij = (x_i - x_j) / ||x_i - x_j||`, over triplets of distinct samples.

    Sample `j` gets the mean over the triplets whose vertex is `j`: the
    mean over the batch is the mean over all triplets (the paper sums).
    Shapes need not match.

    Args:
        teacher: Teacher features (flattened per sample), batch >= 3.
        student: Student features.
        delta: The Huber threshold. Defaults to 1.0 (the paper's).

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.rkd_angle(t, s)
    ```

    Reference:
        Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019
        (eqs. 6-7). https://arxiv.org/abs/1904.05068
    """
    student = require_batch(student, 3, "rkd_angle")
    psi_t = _angles(_flat(teacher))
    psi_s = _angles(_flat(student))
    batch = ops.shape(psi_t)[0]
    eye = ops.eye(batch, dtype="float32")
    # distinct[j, i, k]: i != j, k != j, i != k.
    distinct = (
        (1.0 - eye)[:, :, None] * (1.0 - eye)[:, None, :] * (1.0 - eye)[None, :, :]
    )
    huber = _huber(psi_s - psi_t, delta) * distinct
    return ops.sum(huber, axis=(1, 2)) / ops.maximum(
        ops.sum(distinct, axis=(1, 2)), 1.0
    )


def pkt(teacher, student):
    """Probabilistic knowledge transfer: KL divergence between the teacher's
    and the student's conditional probabilities
    `p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k)` for `j != i`, with the
    cosine kernel `K(a, b) = (cos(a, b) + 1) / 2`.

    Sample `i` gets `sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i})`: the mean
    over the batch is the paper's double sum divided by the batch size.
    Shapes need not match.

    Args:
        teacher: Teacher features (flattened per sample), batch >= 2.
        student: Student features.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.pkt(t, s)
    ```

    Reference:
        Passalis & Tefas, "Learning Deep Representations with Probabilistic
        Knowledge Transfer", ECCV 2018 (eqs. 7-10).
        https://arxiv.org/abs/1803.10837
    """
    student = require_batch(student, 2, "pkt")
    p = _conditional_probabilities(_flat(teacher))
    q = _conditional_probabilities(_flat(student))
    return ops.sum(
        p * (ops.log(ops.maximum(p, _EPSILON)) - ops.log(ops.maximum(q, _EPSILON))),
        axis=-1,
    )


def gram_matrix(teacher, student):
    """Gram-matrix (style) loss: `1 / (4 N^2 M^2) sum_ij (G_s - G_t)_ij^2`.

    `G = F F^T` is the `N x N` matrix of channel correlations of a feature
    map with `N` channels (last axis) and `M` positions, per sample: the
    channels must match (after the adapter), the positions need not.

    Args:
        teacher: Teacher features `(batch, ..., channels)`.
        student: Student features `(batch, ..., channels)`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    ```python
    kerasdistill.losses.gram_matrix(t, s)
    ```

    Reference:
        Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional
        Neural Networks", CVPR 2016 (eqs. 3-4).
    """
    g_t, m_t = _channel_gram(teacher)
    g_s, m_s = _channel_gram(student)
    channels = ops.cast(ops.shape(g_t)[-1], "float32")
    # The paper compares maps of one size M; with two sizes, each Gram
    # matrix is normalized by its own M.
    difference = g_s / m_s - g_t / m_t
    return ops.sum(ops.square(difference), axis=(1, 2)) / (4.0 * channels**2)


# name -> (per-sample function, what the tapped shapes must share)
FEATURE_LOSSES = {
    "mse": (hint_mse, "shape"),
    "cosine": (cosine_distance, "shape"),
    "attention_transfer": (attention_transfer, "spatial"),
    "similarity_preserving": (similarity_preserving, "none"),
    "rkd_distance": (rkd_distance, "none"),
    "rkd_angle": (rkd_angle, "none"),
    "pkt": (pkt, "none"),
    "gram": (gram_matrix, "channels"),
}

# The losses that are a mean of per-position terms, as such a function
# `(teacher, student) -> (batch, positions)`: a padding mask averages them
# over the unpadded positions (`kerasdistill.losses.masking`).
PER_POSITION = {
    "mse": lambda teacher, student: ops.mean(ops.square(student - teacher), axis=-1),
}


def _flat(x):
    return ops.reshape(x, (ops.shape(x)[0], -1))


def _safe_norm(x):
    return ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1), _EPSILON))


def _l2_normalize(x):
    return x / ops.expand_dims(_safe_norm(x), -1)


def _attention_map(x, p):
    if len(x.shape) < 3:
        raise ValueError(
            "attention_transfer expects feature maps (batch, positions..., "
            f"channels) of rank >= 3. Received a feature of shape {x.shape}. "
            "Tap a convolutional layer, or use loss='mse' for vectors."
        )
    return ops.sum(ops.power(ops.abs(x), p), axis=-1)


def _gram_of_batch(x):
    x = _flat(x)
    return ops.matmul(x, ops.transpose(x))


def _pairwise_squared_distances(x):
    squares = ops.sum(ops.square(x), axis=-1)
    distances = (
        squares[:, None] + squares[None, :] - 2.0 * ops.matmul(x, ops.transpose(x))
    )
    return ops.maximum(distances, 0.0)


def _normalized_distances(x):
    off_diagonal = 1.0 - ops.eye(ops.shape(x)[0], dtype="float32")
    distances = ops.sqrt(ops.maximum(_pairwise_squared_distances(x), _EPSILON))
    distances = distances * off_diagonal
    mean = ops.sum(distances) / ops.maximum(ops.sum(off_diagonal), 1.0)
    return distances / ops.maximum(mean, _EPSILON)


def _angles(x):
    """`angles[j, i, k] = <e_ij, e_kj>`, `e_ij` the unit vector from x_j to x_i."""
    differences = x[None, :, :] - x[:, None, :]  # [j, i] = x_i - x_j
    units = differences / ops.expand_dims(_safe_norm(differences), -1)
    return ops.matmul(units, ops.transpose(units, (0, 2, 1)))


def _huber(x, delta):
    absolute = ops.abs(x)
    quadratic = ops.minimum(absolute, delta)
    return 0.5 * ops.square(quadratic) + delta * (absolute - quadratic)


def _conditional_probabilities(x):
    x = _l2_normalize(x)
    kernel = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
    kernel = kernel * (1.0 - ops.eye(ops.shape(x)[0], dtype="float32"))
    return kernel / ops.maximum(ops.sum(kernel, axis=-1, keepdims=True), _EPSILON)


def _channel_gram(x):
    features = ops.reshape(x, (ops.shape(x)[0], -1, ops.shape(x)[-1]))
    positions = ops.cast(ops.shape(features)[1], "float32")
    return ops.matmul(ops.transpose(features, (0, 2, 1)), features), positions


def require_batch(x, minimum, name):
    """Returns `x`, refusing a batch smaller than `minimum` (for a loss
    `name` that compares samples): statically when the batch size is known,
    else when the step runs. XLA (`jit_compile=True`, the Keras
    default on GPUs) drops run-time assertions: there, such a batch gives
    0 (the losses are finite for any batch size)."""
    message = (
        f"{name} compares the samples of a batch with each other and needs "
        f"a batch of at least {minimum}. Received a batch of "
    )
    fix = (
        ". Pick a batch_size that leaves no smaller last batch (e.g. "
        f"len(x) % batch_size >= {minimum} or 0), or batch a tf.data "
        "dataset with drop_remainder=True."
    )
    batch = x.shape[0]
    if batch is not None:
        if batch < minimum:
            raise ValueError(f"{message}{batch}{fix}")
        return x
    if keras.backend.backend() != "tensorflow":
        return x  # JAX and PyTorch know the batch size: checked above
    import tensorflow as tf

    if not tf.is_symbolic_tensor(x):
        return x
    check = tf.debugging.assert_greater_equal(
        tf.shape(x)[0], minimum, message=f"{message}the size shown below{fix}"
    )
    with tf.control_dependencies([check]):
        return tf.identity(x)
