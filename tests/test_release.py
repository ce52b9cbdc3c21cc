"""The package as released: its namespace, its version (one source, the
one pyproject.toml reads) and the changelog entry of that version."""

import importlib.metadata
import inspect
import json
import pathlib
import re

import pytest

import kerasdistill

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11's")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_namespace_holds_only_public_names_and_own_modules():
    # `import sys` at the top of the package once made `kerasdistill.sys`.
    leaked = [
        name
        for name, value in vars(kerasdistill).items()
        if not name.startswith("_")
        and name not in kerasdistill.__all__
        and not (inspect.ismodule(value) and value.__name__.startswith("kerasdistill."))
    ]
    assert leaked == []
    assert not hasattr(kerasdistill, "sys")
    assert not hasattr(kerasdistill, "importlib")


def test_pyproject_reads_the_version_from_the_package():
    with open(ROOT / "pyproject.toml", "rb") as file:
        pyproject = tomllib.load(file)
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "kerasdistill.__version__"}
    # What setuptools makes of it when it builds the sdist and the wheel.
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    configuration = pyprojecttoml.read_configuration(ROOT / "pyproject.toml")
    assert configuration["project"]["version"] == kerasdistill.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", kerasdistill.__version__)


def test_the_installed_metadata_agrees_when_this_tree_is_installed():
    try:
        distribution = importlib.metadata.distribution("kerasdistill")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("kerasdistill is not installed (run from the source tree)")
    origin = json.loads(distribution.read_text("direct_url.json") or "{}")
    if origin.get("url") != ROOT.as_uri():
        pytest.skip(f"the installed kerasdistill is not this tree: {origin}")
    assert distribution.version == kerasdistill.__version__


def test_the_changelog_has_a_section_for_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = re.escape(kerasdistill.__version__)
    assert re.search(rf"^## \[{version}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert "## [Unreleased]" in changelog
