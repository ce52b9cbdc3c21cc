"""The self-distillation examples run end to end (few epochs) and every
model they train learns: better than an untrained one."""

import runpy
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_friedman1

ROOT = Path(__file__).resolve().parents[1]


def _rmse_of_predicting_zero():
    """The test RMSE of an output that stays at 0, as an untrained MLP's
    about does: the regression example's models must do better."""
    _, y = make_friedman1(n_samples=1400, noise=1.0, random_state=0)
    return float(np.sqrt(np.mean(y[400:] ** 2)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, rows, learned",
    [
        (
            "self_distillation_regression.py",
            [
                "plain (labels only)",
                "EMA teacher, huber + hidden",
                "snapshot, teacher-bounded",
                "deep supervision (hidden1)",
            ],
            lambda rmse: rmse < _rmse_of_predicting_zero(),
        ),
        (
            "self_distillation_classification.py",
            [
                "plain (labels only)",
                "PS-KD (snapshot teacher)",
                "born-again generation 0",
                "mutual learning (net_a)",
            ],
            lambda accuracy: 0.3 < accuracy <= 1.0,
        ),  # chance: 0.1 (10 digits)
    ],
)
def test_example_runs(script, rows, learned, capsys):
    module = runpy.run_path(str(ROOT / "examples" / script))
    module["main"](epochs=2)
    out = capsys.readouterr().out
    for row in rows:
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert learned(float(line.split()[-1])), line
