"""The documentation site (mkdocs.yml, docs/): its Python blocks run, its
API reference names every public name, and its links lead somewhere.

The ```python blocks of each page run in order in one namespace, as a
reader pastes them into one session, in a temporary working directory.
Names a page uses without defining them (`teacher`, `student`, `x`,
`y`, ...) are tiny fixtures: those of the docstring examples
(tests/test_docstring_examples.py), those in `FIXTURES` below, and for a
page whose examples need other inputs (images), `PAGE_FIXTURES`. As there,
`epochs=N` becomes `epochs=1` (and `max_trials=N` `max_trials=1`), and a
block with a `# SomeError: ...` comment line must raise it.

A block is left out by an HTML comment on the line just above its fence,
which the site does not show:

- `<!-- skip: why -->`: never run (a fragment, a cluster of machines, a
  data set to download); the reason is required;
- `<!-- requires: module -->`: run only where `module` imports (keras_hub).

`mkdocs build --strict` (.ci/docs_check) checks the rest: that each
reference entry resolves, and the links and anchors between pages.
"""

import importlib
import importlib.util
import inspect
import pathlib
import re

import keras
import numpy as np
import pytest

import kerasdistill
from tests.test_docstring_examples import FIXTURES as DOCSTRING_FIXTURES

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```(\w*)")
MARKER = re.compile(r"^<!-- (skip|requires): (.+?) -->$")
REWRITES = [
    (re.compile(r"\bepochs=\d+"), "epochs=1"),
    (re.compile(r"\bmax_trials=\d+"), "max_trials=1"),
]
STATED_ERROR = re.compile(r"^# (\w+Error): ", re.M)
DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:[ \t]+.*\n)*)", re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Pages whose blocks train several models or export: over ~10 s.
SLOW = {
    "augmentation.md",
    "deploy.md",
    "getting-started.md",
    "language_models.md",
    "transformers.md",
}


def _images(get):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(16, 8, 8, 1)).astype("float32")


def _image_classifier(name, width):
    """8x8x1 images -> flattened -> `{name}_hidden` -> 10 logits."""
    inputs = keras.Input((8, 8, 1), name=f"{name}_input")
    hidden = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(hidden)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden), name=name)


def _dataset(get):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((get("x"), get("y"))).batch(8)


FIXTURES = {
    **DOCSTRING_FIXTURES,
    "images": _images,
    "labels": lambda get: get("y"),
    "teacher_a": lambda get: get("teacher"),
    "teacher_b": lambda get: get("t2"),
    "x_unlabeled": lambda get: get("x"),
    "train_ds": _dataset,
    "val_ds": _dataset,
    "make_student": lambda get: lambda: DOCSTRING_FIXTURES["student"](get),
    "make_model": lambda get: lambda: DOCSTRING_FIXTURES["model"](get),
}
PAGE_FIXTURES = {
    # Augmentation layers that shift and flip images.
    "augmentation.md": {
        "x": _images,
        "teacher": lambda get: _image_classifier("teacher", 16),
        "student": lambda get: _image_classifier("student", 8),
    },
}
# Files a page reads, written before its blocks run.
FILES = {
    "teacher.keras": lambda get: get("teacher").save("teacher.keras"),
}


def _blocks(page):
    """`(line, code, marker, reason)` of each ```python block of `page`."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while not lines[end].startswith("```"):
            end += 1
        if fence.group(1) == "python":
            marker = MARKER.match(lines[index - 1]) if index else None
            blocks.append(
                (
                    index + 1,
                    "\n".join(lines[index + 1 : end]) + "\n",
                    marker and marker.group(1),
                    marker and marker.group(2),
                )
            )
        index = end + 1
    return blocks


def _names(code):
    """Every global name `code` (and the functions it defines) reads."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if inspect.iscode(constant):
            names |= _names(constant)
    return names


def _page_id(page):
    return page.relative_to(DOCS).as_posix()


PAGES_WITH_CODE = [page for page in PAGES if _blocks(page)]


def test_the_guides_have_blocks_to_run_and_each_marker_says_why():
    run = 0
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if line.startswith("<!-- skip") or line.startswith("<!-- requires"):
                where = f"{_page_id(page)}:{number + 1}"
                assert MARKER.match(line), f"{where}: write <!-- skip: why -->"
                assert lines[number + 1] == "```python", (
                    f"{where}: a marker stands on the line just above a ```python fence"
                )
        run += sum(marker is None for _, _, marker, _ in _blocks(page))
    assert run >= 25
    for page in PAGE_FIXTURES:
        assert (DOCS / page).exists(), page


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(page, marks=[pytest.mark.slow] if _page_id(page) in SLOW else [])
        for page in PAGES_WITH_CODE
    ],
    ids=_page_id,
)
def test_the_python_blocks_of_a_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures = {**FIXTURES, **PAGE_FIXTURES.get(_page_id(page), {})}
    made = {}

    def get(name):
        if name not in made:
            made[name] = fixtures[name](get)
        return made[name]

    namespace = {}
    text = page.read_text(encoding="utf-8")
    for name, write in FILES.items():
        if f'"{name}"' in text:
            write(get)
    for line, code, marker, reason in _blocks(page):
        if marker == "skip" or (
            marker == "requires" and importlib.util.find_spec(reason) is None
        ):
            continue
        for pattern, replacement in REWRITES:
            code = pattern.sub(replacement, code)
        where = f"{_page_id(page)}, the block at line {line}"
        compiled = compile(code, where, "exec")
        for name in (_names(compiled) & fixtures.keys()) - namespace.keys():
            namespace[name] = get(name)
        stated = STATED_ERROR.search(code)
        if stated is None:
            exec(compiled, namespace)
        else:
            error = getattr(importlib.import_module("builtins"), stated.group(1))
            with pytest.raises(error):
                exec(compiled, namespace)


def _resolve(path):
    """The object of a dotted path such as `kerasdistill.losses.DKD`."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            value = getattr(value, part)
        return value
    raise ImportError(path)


def _documented():
    """The objects the API reference shows: those of its `::: path`
    entries, and the members of the modules shown with their members, as
    mkdocstrings shows them: the names of the module's `__all__` (else its
    public names), without submodules, and without a name that is also a
    submodule's (`born_again`, `layer_mapping`), which mkdocstrings
    takes for the submodule."""
    found = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        for path, options in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            try:
                value = _resolve(path)
            except ModuleNotFoundError as error:  # an extra not installed
                if error.name.startswith("kerasdistill"):
                    raise
                continue
            found.append(value)
            if not inspect.ismodule(value) or "members: false" in options:
                continue
            names = getattr(value, "__all__", None) or [
                name
                for name, member in vars(value).items()
                if not name.startswith("_")
                and getattr(member, "__module__", None) == value.__name__
            ]
            found.extend(
                getattr(value, name)
                for name in names
                if not inspect.ismodule(getattr(value, name))
                and not (
                    hasattr(value, "__path__")  # a package
                    and importlib.util.find_spec(f"{value.__name__}.{name}")
                )
            )
    return found


def test_every_public_name_is_in_the_api_reference():
    documented = _documented()
    index = (DOCS / "reference" / "index.md").read_text(encoding="utf-8")
    missing = [
        name
        for name in kerasdistill.__all__
        if not any(getattr(kerasdistill, name) is value for value in documented)
    ]
    assert missing == [], (
        "Expected an entry `::: kerasdistill.NAME` (or of its module) in "
        f"docs/reference/ for each name of kerasdistill.__all__. Received none for "
        f"{missing}: add one to the page of its subpackage."
    )
    unlisted = [name for name in kerasdistill.__all__ if f"`{name}`" not in index]
    assert unlisted == [], f"docs/reference/index.md does not list {unlisted}"


@pytest.mark.parametrize(
    "document", [ROOT / "README.md", ROOT / "CHANGELOG.md", *PAGES], ids=str
)
def test_relative_links_lead_to_files(document):
    text = re.sub(r"(?ms)^```.*?^```", "", document.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        path = target.split("#", 1)[0]
        if re.match(r"^\w+:", target) or not path:
            continue
        if not (document.parent / path).exists():
            broken.append(target)
    assert broken == [], f"{document.name} links to missing files: {broken}"
