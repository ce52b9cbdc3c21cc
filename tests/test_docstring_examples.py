"""The ```python examples in the docstrings of the public API run.

Public: the names of `kerasdistill.__all__`, the public names of the
modules it lists (their `__all__`, else what they define without a leading
`_`), the methods of those classes, and the docstrings of the package and
those modules. Each example runs in a fresh namespace of tiny fixtures, the
names the examples use for a teacher, a student, data... (`FIXTURES`, each
made only for an example that names it), in a temporary working directory
(for the files examples save), with `epochs=N` rewritten to `epochs=1`. An
example that states an error (a `# ValueError: ...` comment line) must
raise it. `NOT_RUN` names the few examples left out, each with the reason,
and `SLOW` those marked `slow`.
"""

import importlib
import inspect
import re

import keras
import numpy as np
import pytest

import kerasdistill

BLOCK = re.compile(r"```python\n(.*?)```", re.S)
EPOCHS = re.compile(r"\bepochs=\d+")
STATED_ERROR = re.compile(r"^# (\w+Error): ", re.M)
SAMPLES, FEATURES, CLASSES = 16, 64, 10

NOT_RUN = {
    "kerasdistill.data.tfds.load": "downloads MNIST",
    "kerasdistill.data.tfds.prepare": "downloads MNIST",
    "kerasdistill.data.tfds.labeled_split": "downloads MNIST",
    "kerasdistill.deploy.tuner.DistillerHyperModel": "a 20-trial tuner search",
    "kerasdistill.deploy.export.export_student": "an int8 TFLite conversion (tested in test_export)",
    "kerasdistill.deploy": "a TFLite conversion (tested in test_export)",
    # keras-hub transformers; the same calls run in test_transformers.py and
    # test_language_models.py on tiny keras-hub models.
    "kerasdistill.transformers": "keras-hub BERT and GPT-2 models",
    "kerasdistill.transformers.attention.AttentionDistillation": "keras-hub BERT models",
    "kerasdistill.transformers.layer_mapping.find_stack": "a keras-hub BERT model",
    "kerasdistill.transformers.layer_mapping.layer_mapping": "keras-hub BERT models",
    "kerasdistill.transformers.sequence_kd.generate_transfer_set": "a keras-hub GPT-2 model",
    "kerasdistill.transformers.causal_lm.CausalLMDistiller": "keras-hub causal LMs (tested in test_causal_lm.py)",
}

# Examples that train several models or fit several times: over a few
# seconds each, so marked `slow` (they still run in CI).
SLOW = {
    "kerasdistill.self_distillation.born_again.BornAgainResult",
    "kerasdistill.self_distillation.born_again.born_again",
    "kerasdistill.self_distillation.self_distiller.SelfDistiller",
    "kerasdistill.self_distillation.mutual.MutualLearning",
    "kerasdistill.self_distillation.deep_supervision.DeepSupervision",
}


def _classifier(name, prefix, width=8):
    """Inputs (64,) -> `{prefix}hidden` -> `block1_out` -> `block2_out` -> 10 logits."""
    inputs = keras.Input((FEATURES,), name=f"{name}_input")
    h = keras.layers.Dense(width, activation="relu", name=f"{prefix}hidden")(inputs)
    h = keras.layers.Dense(width, activation="relu", name="block1_out")(h)
    h = keras.layers.Dense(width, activation="relu", name="block2_out")(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(h), name=name)


def _regressor():
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden), name="regressor")


def _compiled(model, loss=None):
    model.compile(
        "adam",
        loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _data(get):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, FEATURES)).astype("float32")
    return x, rng.integers(0, CLASSES, size=SAMPLES).astype("int32")


def _logits(get, shift=0.0):
    rng = np.random.default_rng(1)
    return (rng.normal(size=(SAMPLES, CLASSES)) + shift).astype("float32")


def _token_logits(seed):
    """Token-level logits (batch, sequence, vocabulary)."""
    return np.random.default_rng(seed).normal(size=(2, 4, 128)).astype("float32")


def _attention(seed):
    """Attention probabilities (batch, heads, queries, keys)."""
    scores = np.random.default_rng(seed).normal(size=(2, 2, 4, 4))
    return (np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)).astype("float32")


def _maps(channels):
    return (
        np.random.default_rng(channels)
        .normal(size=(SAMPLES, 4, 4, channels))
        .astype("float32")
    )


def _distiller(get):
    distiller = kerasdistill.Distiller(
        get("teacher"), get("student"), kerasdistill.LogitsDistillation()
    )
    return _compiled(distiller)


def _history(get):
    return get("distiller").fit(get("x"), get("y"), epochs=1, verbose=0)


# The names the examples use, each made only for an example that names it.
FIXTURES = {
    "keras": lambda get: keras,
    "np": lambda get: np,
    "kerasdistill": lambda get: kerasdistill,
    "kd": lambda get: kerasdistill,
    "data": _data,
    **{
        name: (lambda get: get("data")[0])
        for name in ("x", "x_train", "x_val", "x_test", "x_labeled", "x_unlabeled")
    },
    **{
        name: (lambda get: get("data")[1])
        for name in ("y", "y_train", "y_val", "y_test", "y_labeled")
    },
    "batch_x": lambda get: kerasdistill.cache_teacher_outputs(
        get("teacher"), get("x"), batch_size=8
    )[0],
    "t": _logits,
    "s": lambda get: _logits(get, shift=0.5),
    "logits": _logits,
    "teacher_logits": lambda get: _token_logits(0),
    "student_logits": lambda get: _token_logits(1),
    "teacher_scores": lambda get: _attention(0),
    "student_scores": lambda get: _attention(1),
    "t_maps": lambda get: _maps(8),
    "s_maps": lambda get: _maps(3),
    "teacher": lambda get: _classifier("teacher", "t_", width=16),
    "t1": lambda get: get("teacher"),
    "t2": lambda get: _classifier("teacher_2", "t_", width=16),
    "student": lambda get: _classifier("student", "s_"),
    "model": lambda get: _classifier("model", ""),
    "regressor": lambda get: _regressor(),
    "baseline": lambda get: _compiled(_classifier("baseline", "s_")),
    "make_net": lambda get: lambda name: _classifier(name, ""),
    "build": lambda get: lambda: _compiled(_classifier("generation", "")),
    "distiller": _distiller,
    "history": _history,
    "supervised": lambda get: _compiled(
        kerasdistill.DeepSupervision(
            _classifier("supervised", ""),
            ["block1_out"],
            kerasdistill.LogitsDistillation(),
        )
    ),
    "mutual": lambda get: _compiled(
        kerasdistill.MutualLearning(
            [_classifier("net_a", ""), _classifier("net_b", "")],
            kerasdistill.LogitsDistillation(),
        )
    ),
}


def _names(code):
    """Every global name `code` (and the functions it defines) reads."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if inspect.iscode(constant):
            names |= _names(constant)
    return names


def namespace(code):
    """The fixtures that `code` names, and what they are made from."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = FIXTURES[name](get)
        return made[name]

    return {name: get(name) for name in _names(code) & FIXTURES.keys()}


def _public_objects():
    """`(qualified name, object)` of every public object with a docstring."""
    found = {"kerasdistill": kerasdistill}
    for name in kerasdistill.__all__:
        value = getattr(kerasdistill, name)
        if inspect.ismodule(value):
            found[value.__name__] = value
            names = getattr(value, "__all__", None) or [
                n
                for n, v in vars(value).items()
                if not n.startswith("_")
                and getattr(v, "__module__", None) == value.__name__
            ]
            members = [getattr(value, n) for n in names]
        else:
            members = [value]
        for member in members:
            if inspect.ismodule(member):
                continue
            found[f"{member.__module__}.{member.__qualname__}"] = member
            if inspect.isclass(member):
                for method_name, method in vars(member).items():
                    method = getattr(method, "fget", method)
                    if inspect.isfunction(method) and not method_name.startswith("_"):
                        found[f"{member.__module__}.{method.__qualname__}"] = method
    return found


def _examples():
    for qualified, obj in sorted(_public_objects().items()):
        for index, code in enumerate(BLOCK.findall(inspect.getdoc(obj) or "")):
            marks = (
                [pytest.mark.skip(reason=NOT_RUN[qualified])]
                if qualified in NOT_RUN
                else []
            )
            if qualified in SLOW:
                marks.append(pytest.mark.slow)
            yield pytest.param(code, id=f"{qualified}[{index}]", marks=marks)


EXAMPLES = list(_examples())


def test_the_public_examples_are_collected():
    assert len(EXAMPLES) >= 60
    for name in (*NOT_RUN, *SLOW):
        assert any(p.id.startswith(f"{name}[") for p in EXAMPLES), name


@pytest.mark.parametrize("code", EXAMPLES)
def test_docstring_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = EPOCHS.sub("epochs=1", code)
    compiled = compile(code, "<docstring example>", "exec")
    stated = STATED_ERROR.search(code)
    names = namespace(compiled)
    if stated is None:
        exec(compiled, names)
    else:
        error = getattr(importlib.import_module("builtins"), stated.group(1))
        with pytest.raises(error):
            exec(compiled, names)
