"""The package layout: one concern a subpackage, small modules, private
Keras confined to one module, and the v0.1.0 import paths still working."""

import ast
import importlib
import pathlib

import pytest

import kerasdistill as kd

PACKAGE = pathlib.Path(kd.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
# The flat API of v0.1.0 (its `__all__`); the current one may only grow.
V0_1_0_API = [
    "BornAgainResult",
    "DIST",
    "DKD",
    "DeepSupervision",
    "DifficultyWeighted",
    "DistillationLoss",
    "Distiller",
    "ExportReport",
    "FeatureDistillation",
    "LogitsDistillation",
    "MutualLearning",
    "RegressionDistillation",
    "SelfDistiller",
    "born_again",
    "cache",
    "cache_teacher_outputs",
    "callbacks",
    "export_student",
    "feature_losses",
    "format_report",
    "logit_losses",
    "losses",
    "recipes",
    "report",
    "schedules",
    "tfds_data",
]


def _name(path):
    return path.relative_to(PACKAGE.parent).with_suffix("").as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_over_600_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 600, f"{_name(path)} has {lines} lines; split it by concern."


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_private_keras_only_in_keras_internals(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    imported += [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ]
    private = [name for name in imported if name.startswith("keras.src")]
    if path.name == "_keras_internals.py":
        return
    assert not private, (
        f"{_name(path)} imports {private}: private Keras belongs in "
        "kerasdistill/_keras_internals.py only."
    )


def test_each_subpackage_names_its_modules():
    """Each subpackage's docstring is its map: it names every module in it."""
    subpackages = sorted(p.parent for p in PACKAGE.glob("*/__init__.py"))
    assert {p.name for p in subpackages} >= {
        "data",
        "deploy",
        "losses",
        "schedules",
        "self_distillation",
    }
    for folder in subpackages:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        unnamed = [
            m.stem
            for m in folder.glob("*.py")
            if m.stem != "__init__" and f"`{m.stem}`" not in (doc or "")
        ]
        assert not unnamed, f"kerasdistill.{folder.name}'s docstring omits {unnamed}"


def test_the_flat_api_of_v0_1_0_is_kept():
    missing = [name for name in V0_1_0_API if not hasattr(kd, name)]
    assert not missing and set(V0_1_0_API) <= set(kd.__all__), missing


@pytest.mark.parametrize(
    "old, new",
    [
        ("kerasdistill.callbacks", "kerasdistill.schedules.callbacks"),
        ("kerasdistill.recipes", "kerasdistill.schedules.recipes"),
        ("kerasdistill.tfds_data", "kerasdistill.data.tfds"),
        ("kerasdistill.cache", "kerasdistill.data.cache"),
        ("kerasdistill.feature_losses", "kerasdistill.losses.feature_functions"),
        ("kerasdistill.logit_losses", "kerasdistill.losses"),
    ],
)
def test_the_module_paths_of_v0_1_0_import(old, new):
    """`import kerasdistill.callbacks` and `from kerasdistill.recipes import
    ...` work as they did before the move, and name the moved module."""
    assert importlib.import_module(old) is importlib.import_module(new)
    assert getattr(kd, old.split(".")[1]) is importlib.import_module(new)


def test_names_read_through_the_old_paths_are_the_new_objects():
    from kerasdistill.callbacks import AlphaScheduler
    from kerasdistill.logit_losses import decoupled_kd
    from kerasdistill.recipes import alpha_ramp

    assert AlphaScheduler is kd.schedules.callbacks.AlphaScheduler
    assert alpha_ramp is kd.schedules.recipes.alpha_ramp
    assert decoupled_kd is kd.losses.dkd.decoupled_kd
    assert kd.feature_losses.hint_mse is kd.losses.hint_mse
    assert kd.tfds_data.prepare is kd.data.tfds.prepare
    assert kd.schedules.Linear is kd.schedules.curves.Linear


def _imports(path):
    """The modules `path` imports (absolute names, `from x import y` as
    `x.y` too, so that a submodule import counts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _module_name(path):
    name = _name(path).replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if "deploy" not in p.relative_to(PACKAGE).parts],
    ids=_name,
)
def test_no_thread_state_on_the_training_path(path):
    """What a training step computes travels in Keras's arguments, never in
    thread-local state: no module outside `deploy/` imports `threading`."""
    assert "threading" not in _imports(path), (
        f"{_name(path)} imports threading: pass the step's values through "
        "call() / compute_loss() arguments (y_pred) instead."
    )


def test_no_import_cycle_in_the_package():
    """No chain of module-level imports inside the package leads back to
    where it started (the package `__init__` files aside: they only
    re-export)."""
    modules = {_module_name(p): p for p in MODULES}
    edges = {
        name: {
            target
            for target in _imports(path)
            if target in modules and not modules[target].name == "__init__.py"
        }
        for name, path in modules.items()
        if path.name != "__init__.py"
    }
    cycles = []

    def visit(node, trail):
        for target in sorted(edges.get(node, ())):
            if target in trail:
                cycles.append(trail[trail.index(target) :] + [target])
            elif target not in done:
                visit(target, trail + [target])
        done.add(node)

    done = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start])
    assert not cycles, f"import cycles: {cycles}"


# The private Keras and TensorFlow names kerasdistill reads, read as an
# attribute (`x._nodes`) or by name (`getattr(x, "_nodes")`).
PRIVATE_STATE = (
    "_as_serialized_graph",
    "_distribute_strategy",
    "_inbound_nodes",
    "_keras_history",
    "_maybe_symbolic_build",
    "_in_multi_worker_mode",
    "_nodes",
)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_private_keras_and_tensorflow_state_only_in_keras_internals(path):
    if path.name == "_keras_internals.py":
        return
    text = path.read_text(encoding="utf-8")
    found = [
        name
        for name in PRIVATE_STATE
        if f".{name}" in text or f'"{name}"' in text or f"'{name}'" in text
    ]
    found += ["keras.src"] if "keras.src" in text else []
    assert not found, (
        f"{_name(path)} reads {found}: private Keras or TensorFlow state "
        "belongs in kerasdistill/_keras_internals.py, with its test."
    )
