"""The demo command and the examples run end to end (few epochs)."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from kerasdistill import cli

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_the_table_and_writes_the_report(capsys, tmp_path):
    argv = ["demo", "--epochs", "3", "--output", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    # One progress bar per model trained (the teacher trains 2/3 of the
    # epochs) on the line under its title, redrawn after each epoch (`\r`);
    # no line per epoch.
    for title, epochs in (
        ("teacher, on every training label", "2/2"),
        ("baseline, the student on the labeled inputs alone", "3/3"),
        ("student, distilled on every training input", "3/3"),
    ):
        bar = out.split(f"{title}\n", 1)[1].split("\n", 1)[0]
        assert bar.rsplit("\r", 1)[-1].startswith(f"\x1b[1m{epochs}\x1b[0m ")
    assert "Epoch" not in out and "/step" not in out
    assert "trained on 251 labeled inputs alone" in out
    assert "fewer parameters than the teacher" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith(("teacher ", "baseline ", "student "))
    }
    assert set(rows) == {"teacher", "baseline", "student"}
    assert rows["baseline"][1] == rows["student"][1] == "1,210"
    accuracy = {name: float(row[4]) for name, row in rows.items()}
    # The demo's claim: distillation beats the same student on few labels.
    assert accuracy["teacher"] > 0.5 and accuracy["student"] > accuracy["baseline"]
    for name in ("report.md", "accuracy_vs_size.png", "confidence.png", "training.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert f"Report written to {tmp_path / 'report.md'}" in out
    tflite = tmp_path / "student.tflite"
    assert f"Student as TFLite: tflite (float32) {tflite}: " in out
    assert f"{tflite.stat().st_size / 1024:.1f} KiB" in out


def test_demo_rejects_a_bad_fraction():
    with pytest.raises(SystemExit, match="labeled-fraction"):
        cli.main(["demo", "--labeled-fraction", "0"])


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "kerasdistill", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
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
    for row in (
        "student, labels only",
        "student, logits KD",
        "student, logits + features KD",
        "adapters (trained with the student",
    ):
        assert row in out
    accuracies = [
        float(line.split()[-1])
        for line in out.splitlines()
        if line.startswith(("teacher", "student"))
    ]
    assert len(accuracies) == 4
    assert accuracies[0] > 0.5  # the teacher; chance is 0.1 (10 digits)
    assert all(a > 0.15 for a in accuracies[1:])  # every student learned


@pytest.mark.slow
def test_transformer_distillation_example_runs(capsys):
    pytest.importorskip(
        "keras_hub",
        reason="keras-hub is not installed: pip install 'kerasdistill[hub]'",
    )
    module = runpy.run_path(str(ROOT / "examples" / "transformer_distillation.py"))
    module["main"](epochs=1, samples=64)
    out = capsys.readouterr().out
    assert "transformer_layer_3 -> distilled_backbone/transformer_layer_1" in out
    rows = [
        line
        for line in out.splitlines()
        if line.startswith(("teacher", "student, labels only", "student, distilled"))
    ]
    assert len(rows) == 3 and all(0.0 <= float(row.split()[-1]) <= 1.0 for row in rows)
