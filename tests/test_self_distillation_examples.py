"""The self-distillation examples run end to end (few epochs)."""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, rows",
    [
        ("self_distillation_regression.py",
         ["plain (labels only)", "EMA teacher, huber + hidden", "snapshot, teacher-bounded",
          "deep supervision (hidden1)"]),
        ("self_distillation_classification.py",
         ["plain (labels only)", "PS-KD (snapshot teacher)", "born-again generation 0",
          "mutual learning (net_a)"]),
    ],
)
def test_example_runs(script, rows, capsys):
    module = runpy.run_path(str(ROOT / "examples" / script))
    module["main"](epochs=2)
    out = capsys.readouterr().out
    for row in rows:
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert float(line.split()[-1]) >= 0.0
