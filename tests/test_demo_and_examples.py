"""The demo command and the examples run end to end (few epochs)."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from kerasdistill import cli

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_the_table(capsys):
    assert cli.main(["demo", "--epochs", "3", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    for row in ("teacher (all labels)", "student, labels only (251 labeled)",
                "student, distilled (teacher on all inputs)", "size ratio"):
        assert row in out
    accuracies = [float(line.split()[-1]) for line in out.splitlines()
                  if line.startswith(("teacher", "student"))]
    assert len(accuracies) == 3 and all(0.0 <= a <= 1.0 for a in accuracies)


def test_demo_rejects_a_bad_fraction():
    with pytest.raises(SystemExit, match="labeled-fraction"):
        cli.main(["demo", "--labeled-fraction", "0"])


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "kerasdistill", "--help"], capture_output=True,
        text=True, cwd=ROOT, check=True,
    )
    assert "demo" in result.stdout


@pytest.mark.parametrize("script", ["classification.py", "regression.py"])
def test_example_runs(script, capsys):
    module = runpy.run_path(str(ROOT / "examples" / script))
    module["main"](epochs=2)
    out = capsys.readouterr().out
    assert "student, labels only" in out and "student, distilled" in out


@pytest.mark.slow
def test_feature_distillation_example_runs(capsys):
    module = runpy.run_path(str(ROOT / "examples" / "feature_distillation.py"))
    module["main"](epochs=1)
    out = capsys.readouterr().out
    for row in ("student, labels only", "student, logits KD",
                "student, logits + features KD", "adapters (trained with the student"):
        assert row in out
    accuracies = [float(line.split()[-1]) for line in out.splitlines()
                  if line.startswith(("teacher", "student"))]
    assert len(accuracies) == 4 and all(0.0 <= a <= 1.0 for a in accuracies)
