"""Layer mapping between two transformer stacks: which student layer learns
which teacher layer, as the distillation losses that say so.

The stacks are found from the layers' names (keras-hub names them
`transformer_layer_{i}` in every backbone), searched inside nested models,
so no keras-hub import is needed.
"""

import re

import keras

from kerasdistill import _keras_internals
from kerasdistill import taps
from kerasdistill.losses import features
from kerasdistill.transformers import attention as attention_module

STRATEGIES = ("uniform", "last")


def layer_mapping(
    teacher,
    student,
    strategy="uniform",
    loss="mse",
    layer_pattern="transformer_layer_{i}",
    embeddings=False,
    mask="auto",
    adapter="auto",
    attention=None,
):
    """Returns the losses that map a student's transformer layers onto a
    teacher's: one `FeatureDistillation` on the hidden states per pair
    (with a learned adapter where the widths differ).

    `strategy="uniform"` is TinyBERT's map: with `k = teacher layers /
    student layers`, student layer `i` (from 0) learns teacher layer
    `(i + 1) * k - 1`, so the last student layer learns the last teacher
    layer (when `k` is not a whole number, `floor((i + 1) * k) - 1`).
    `"last"` maps the last student layer onto the last teacher layer alone
    (MiniLM's choice). A dict `{teacher_layer: student_layer}` gives the
    pairs, each an index into the stack (negative counts from the end) or a
    layer name or path.

    Args:
        teacher: The teacher, a functional model (e.g. a keras-hub task
            model) whose stack is named by `layer_pattern`.
        student: The student, likewise.
        strategy: `"uniform"` (default), `"last"`, or a dict.
        loss: The feature loss of each pair (see
            `kerasdistill.FeatureDistillation`). Defaults to `"mse"`.
        layer_pattern: The stack's layer names, with `{i}` for the layer's
            number. Defaults to keras-hub's `"transformer_layer_{i}"`.
        embeddings: `False` (default); `True` to add TinyBERT's embedding
            loss between the layers that feed each first stack layer; or a
            pair `(teacher_layer, student_layer)` naming them.
        mask: `"auto"` (default): keras-hub's `"padding_mask"` input when
            both models take it, else no mask; `None`, or the name (index)
            of the input holding the padding mask.
        adapter: The adapter of each `FeatureDistillation`. Defaults to
            `"auto"` (a learned projection where the widths differ).
        attention: `None` (default); `"kl"` (MiniLM) or `"mse"` (TinyBERT)
            to add an `AttentionDistillation` per pair of layers (they must
            return their attention: keras-hub's `TransformerEncoder` does;
            heads are averaged when their numbers differ).

    Returns:
        A list of losses: the embedding loss (if any), one hidden-state loss
        per pair, then one attention loss per pair (if any).

    Example:

    ```python
    losses = kerasdistill.layer_mapping(teacher, student, strategy="uniform")
    distiller = kerasdistill.Distiller(
        teacher, student, [kerasdistill.LogitsDistillation(2.0), *losses],
    )
    ```

    Reference:
        Jiao et al., "TinyBERT: Distilling BERT for Natural Language
        Understanding", Findings of EMNLP 2020 (section 3.2).
        https://arxiv.org/abs/1909.10351
    """
    teacher_stack = find_stack(teacher, layer_pattern, "teacher")
    student_stack = find_stack(student, layer_pattern, "student")
    pairs = _pairs(strategy, teacher_stack, student_stack)
    if attention is not None and attention not in attention_module.ATTENTION_LOSSES:
        raise ValueError(
            "Expected `attention` to be None or one of "
            f"{sorted(attention_module.ATTENTION_LOSSES)}. Received: "
            f"attention={attention!r}"
        )
    mask = _mask(teacher, student, mask)
    losses = []
    if embeddings is not False:
        teacher_embedding, student_embedding = _embeddings(
            embeddings, teacher, student, teacher_stack, student_stack
        )
        losses.append(
            features.FeatureDistillation(
                loss,
                teacher_embedding,
                student_embedding,
                adapter=adapter,
                mask=mask,
                name="layer_map_embeddings",
            )
        )
    for teacher_layer, student_layer in pairs:
        losses.append(
            features.FeatureDistillation(
                loss,
                teacher_layer,
                student_layer,
                adapter=adapter,
                mask=mask,
                name=f"layer_map_{_leaf(teacher_layer)}_to_{_leaf(student_layer)}",
            )
        )
    for teacher_layer, student_layer in pairs if attention else ():
        heads = [
            taps.feature_spec(model, taps.attention_tap(name), role).shape[1]
            for model, name, role in (
                (teacher, teacher_layer, "teacher"),
                (student, student_layer, "student"),
            )
        ]
        losses.append(
            attention_module.AttentionDistillation(
                teacher_layer,
                student_layer,
                loss=attention,
                average_heads=heads[0] != heads[1],
                mask=mask,
                name=f"attention_map_{_leaf(teacher_layer)}_to_{_leaf(student_layer)}",
            )
        )
    return losses


def find_stack(model, layer_pattern, role="model"):
    """The paths of `model`'s layers named by `layer_pattern` (`{i}` for the
    number), in the order of their numbers.

    Example:

    ```python
    kerasdistill.transformers.find_stack(bert_classifier, "transformer_layer_{i}")
    # ["bert_backbone/transformer_layer_0", "bert_backbone/transformer_layer_1"]
    ```
    """
    if not isinstance(layer_pattern, str) or layer_pattern.count("{i}") != 1:
        raise ValueError(
            "Expected `layer_pattern` to be a layer name with one '{i}' for "
            "the layer's number, e.g. 'transformer_layer_{i}'. Received: "
            f"layer_pattern={layer_pattern!r}"
        )
    if not taps.is_graph_network(model):
        raise ValueError(
            f"Expected the {role} to be a functional model (e.g. a keras-hub "
            f"task model) to find its layers '{layer_pattern}'. Received "
            f"'{getattr(model, 'name', model)}' ({type(model).__name__}), a "
            "subclassed model without a graph. Pass the layer pairs as "
            "FeatureDistillation losses instead."
        )
    before, after = layer_pattern.split("{i}")
    regex = re.compile(re.escape(before) + r"(\d+)" + re.escape(after))
    found = {}
    layers = taps.named_layers(model)
    for path, layer in layers:
        match = regex.fullmatch(layer.name)
        if match:
            found.setdefault(int(match.group(1)), []).append(path)
    if not found:
        names = [path for path, _ in layers]
        raise ValueError(
            f"Expected layers named '{layer_pattern}' in the {role} "
            f"'{model.name}'. Received none among its layers: {names}. Pass "
            "the pattern of its transformer layers as layer_pattern=."
        )
    shared = {i: paths for i, paths in found.items() if len(paths) > 1}
    if shared:
        raise ValueError(
            f"Expected one stack of '{layer_pattern}' layers in the {role} "
            f"'{model.name}'. Received several layers per number: {shared}. "
            "Map the layers with a dict of their paths."
        )
    return [found[i][0] for i in sorted(found)]


def _pairs(strategy, teacher_stack, student_stack):
    """`[(teacher_layer, student_layer), ...]` paths."""
    teachers, students = len(teacher_stack), len(student_stack)
    if isinstance(strategy, dict):
        return [
            (_layer(t, teacher_stack, "teacher"), _layer(s, student_stack, "student"))
            for t, s in strategy.items()
        ]
    if strategy == "last":
        return [(teacher_stack[-1], student_stack[-1])]
    if strategy != "uniform":
        raise ValueError(
            f"Expected `strategy` to be one of {list(STRATEGIES)} or a dict "
            "{teacher_layer: student_layer}. Received: "
            f"strategy={strategy!r}"
        )
    if students > teachers:
        raise ValueError(
            "strategy='uniform' maps each student layer onto a teacher layer "
            f"and needs a student with at most as many layers. Received "
            f"{teachers} teacher and {students} student layers. Pass a dict "
            "{teacher_layer: student_layer}."
        )
    return [
        (teacher_stack[(i + 1) * teachers // students - 1], student_stack[i])
        for i in range(students)
    ]


def _layer(key, stack, role):
    if isinstance(key, str):
        return key
    if (
        isinstance(key, int)
        and not isinstance(key, bool)
        and -len(stack) <= key < len(stack)
    ):
        return stack[key]
    raise ValueError(
        f"Expected each {role} layer of the strategy dict to be a layer name "
        f"or an index into its {len(stack)} layers {stack}. Received: {key!r}"
    )


def _mask(teacher, student, mask):
    if mask != "auto":
        return mask
    takes = [
        isinstance(model.input, dict) and "padding_mask" in model.input
        for model in (teacher, student)
    ]
    return "padding_mask" if all(takes) else None


def _embeddings(embeddings, teacher, student, teacher_stack, student_stack):
    if embeddings is True:
        return (
            _embedding_layer(teacher, teacher_stack[0], "teacher"),
            _embedding_layer(student, student_stack[0], "student"),
        )
    if (
        isinstance(embeddings, (list, tuple))
        and len(embeddings) == 2
        and all(isinstance(name, str) for name in embeddings)
    ):
        return tuple(embeddings)
    raise ValueError(
        "Expected `embeddings` to be False, True or a pair of layer names "
        f"(teacher_layer, student_layer). Received: embeddings={embeddings!r}"
    )


def _embedding_layer(model, first_layer, role):
    """The path of the layer whose output the first stack layer takes."""
    path = taps.resolve_path(model, first_layer, role)
    container = model if len(path) == 1 else path[-2]
    producer = _keras_internals.producer_of_first_argument(container, path[-1])
    if producer is None or isinstance(producer, keras.layers.InputLayer):
        raise ValueError(
            f"Expected a layer feeding '{first_layer}' in the {role} to tap as "
            "its embeddings. Received a model input there. Name the "
            "embedding layers with embeddings=(teacher_layer, student_layer)."
        )
    return taps.SEPARATOR.join([*(layer.name for layer in path[:-1]), producer.name])


def _leaf(layer_name):
    return layer_name.rsplit(taps.SEPARATOR, 1)[-1]
