"""Keras's own tests of `keras.distillation`, run against kerasdistill.

kerasdistill is a drop-in for `keras.distillation`: code written for it runs
when `keras.distillation` is replaced by `kerasdistill`. This module proves it
with Keras's own tests, taken from the installed keras
(`keras/src/distillation/distiller_test.py` and `distillation_loss_test.py`):
their source is read at collection time, each
`from keras.src.distillation.<module> import <Name>` becomes
`from kerasdistill import <Name>` (line numbers kept), and their test classes
are put in this module, so pytest collects and runs each Keras test here, under
the current `KERAS_BACKEND`, with its own name and traceback:

    tests/test_keras_distillation_suite.py::TestDistiller::test_full_training_workflow

A traceback points at the installed Keras file, whose lines match the copy run.
Any other reference to `keras.distillation` left in a Keras test is an error
here (the rewrite must learn it), not a silent test of Keras against itself.

Only some keras wheels ship their tests (3.15.1 does; 3.12.0 and
keras-nightly do not): `KERASDISTILL_KERAS_TESTS=DIR` takes the two files from
DIR instead (CI points it at the newest release's, to run them on the oldest
keras and on keras-nightly too). Without the files the module is skipped, and
with `KERASDISTILL_REQUIRE_KERAS_SUITE=1` (CI) that is a failure.
"""

import ast
import os
import pathlib
import unittest

import keras
import pytest

KERAS_TESTS = pathlib.Path(
    os.environ.get("KERASDISTILL_KERAS_TESTS")
    or pathlib.Path(keras.__file__).parent / "src" / "distillation"
)
KERAS_TEST_FILES = ("distiller_test.py", "distillation_loss_test.py")
PREFIX = "keras.src.distillation"


def _rewrite(source, path):
    """`source` with its `keras.src.distillation` imports pointed at kerasdistill.

    Each such import statement is replaced in place by
    `from kerasdistill import <names>`, padded so that every other line keeps
    its number.
    """
    lines = source.splitlines(keepends=True)
    module = ast.parse(source, filename=str(path))
    for node in ast.walk(module):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PREFIX):
            names = ", ".join(
                a.name if a.asname is None else f"{a.name} as {a.asname}"
                for a in node.names
            )
            indent = lines[node.lineno - 1][: node.col_offset]
            lines[node.lineno - 1] = f"{indent}from kerasdistill import {names}\n"
            for i in range(node.lineno, node.end_lineno):
                lines[i] = "\n"
    rewritten = "".join(lines)
    # Nothing may still reach keras.distillation: that would test Keras
    # against itself.
    for node in ast.walk(ast.parse(rewritten, filename=str(path))):
        named = None
        if isinstance(node, ast.Import):
            named = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            named = [node.module or ""]
        elif isinstance(node, ast.Attribute) and node.attr == "distillation":
            named = [ast.unparse(node)]
        if named and any(
            n.startswith(PREFIX) or n.startswith("keras.distillation") for n in named
        ):
            raise RuntimeError(
                f"{path}:{node.lineno} still uses keras.distillation after the "
                f"rewrite ({ast.unparse(node)}); teach "
                f"tests/test_keras_distillation_suite.py::_rewrite this form."
            )
    return rewritten


def _test_names(source):
    """{class name: [test method names]} of the TestCase classes in `source`."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            tests = [
                f.name
                for f in node.body
                if isinstance(f, ast.FunctionDef) and f.name.startswith("test")
            ]
            if tests:
                found[node.name] = tests
    return found


def _load():
    """Runs each rewritten Keras test file; returns its TestCase classes."""
    classes, expected = {}, {}
    for filename in KERAS_TEST_FILES:
        path = KERAS_TESTS / filename
        source = path.read_text()
        namespace = {
            "__name__": f"keras_distillation_suite.{path.stem}",
            "__file__": str(path),
        }
        exec(compile(_rewrite(source, path), str(path), "exec"), namespace)
        for name, tests in _test_names(source).items():
            cls = namespace[name]
            if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
                continue
            if name in classes:
                raise RuntimeError(f"Two Keras test classes are named {name}.")
            classes[name] = cls
            expected[name] = tests
    return classes, expected


_missing = [f for f in KERAS_TEST_FILES if not (KERAS_TESTS / f).is_file()]
if _missing:
    _reason = (
        f"no {', '.join(_missing)} in {KERAS_TESTS} (keras {keras.__version__}; "
        f"keras.distillation arrived in 3.12, and not every keras wheel ships "
        f"its tests: set KERASDISTILL_KERAS_TESTS to a folder that has them)"
    )
    if os.environ.get("KERASDISTILL_REQUIRE_KERAS_SUITE") == "1":
        raise RuntimeError(f"KERASDISTILL_REQUIRE_KERAS_SUITE=1 but {_reason}.")
    pytest.skip(_reason, allow_module_level=True)

KERAS_CLASSES, EXPECTED_TESTS = _load()
globals().update(KERAS_CLASSES)


@pytest.fixture(autouse=True)
def _restore_traceback_filtering():
    # Keras's TestCase.setUp turns Keras's traceback filtering off for good.
    enabled = keras.config.is_traceback_filtering_enabled()
    yield
    if enabled:
        keras.config.enable_traceback_filtering()


def test_every_keras_test_is_collected(request):
    """Each `test*` method of Keras's files is a test here, none lost."""
    loader = unittest.TestLoader()
    for name, cls in KERAS_CLASSES.items():
        assert sorted(loader.getTestCaseNames(cls)) == sorted(EXPECTED_TESTS[name])
    assert sum(map(len, EXPECTED_TESTS.values())) > 0
    options = request.config.option
    if (
        options.keyword
        or options.markexpr
        or any("::" in arg for arg in request.config.args)
    ):
        return  # Only some tests were asked for.
    collected = set()
    for item in request.session.items:
        parts = item.nodeid.split("::")
        if parts[0].endswith("test_keras_distillation_suite.py") and len(parts) == 3:
            collected.add(f"{parts[1]}::{parts[2]}")
    wanted = {f"{c}::{t}" for c, tests in EXPECTED_TESTS.items() for t in tests}
    assert wanted <= collected, f"not collected: {sorted(wanted - collected)}"
