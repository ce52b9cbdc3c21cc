"""The `kerasdistill` command is quiet: TensorFlow's and absl's C++ log
lines do not reach the terminal (kerasdistill_cli), and `--verbose 2`
brings back Keras's line per epoch."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

import kerasdistill_cli
from kerasdistill import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# TensorFlow's, absl's and LiteRT's native lines, as `kerasdistill demo`
# printed them before it was made quiet.
NATIVE_LOG = re.compile(
    r"^([IWE]\d{4} |WARNING: All log messages before absl|INFO: Created TensorFlow"
    r" Lite|To enable the following instructions)"
    r"|oneDNN|cuda_platform|cudart_stub|Reading SavedModel|XNNPACK"
)


def test_native_stderr_is_captured_and_shown_when_the_block_fails(capfd):
    with kerasdistill_cli.native_stderr_captured():
        os.write(2, b"I0000 native chatter\n")
        print("a Python warning", file=sys.stderr)
    captured = capfd.readouterr()
    assert "native chatter" not in captured.err
    assert "a Python warning" in captured.err

    with pytest.raises(RuntimeError, match="converter aborted"):
        with kerasdistill_cli.native_stderr_captured():
            os.write(2, b"F0000 what the converter said\n")
            raise RuntimeError("converter aborted")
    assert "F0000 what the converter said" in capfd.readouterr().err
    os.write(2, b"after the block\n")
    assert capfd.readouterr().err == "after the block\n"


def test_demo_verbose_2_prints_kerass_line_per_epoch(capsys, tmp_path):
    argv = ["demo", "--epochs", "1", "--verbose", "2", "--output", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    # teacher, baseline and distilled student: one line for their one epoch.
    assert len(re.findall(r"^\d+/\d+ - \d+s - .*loss: ", out, re.M)) == 3


# About 20 s each: a fresh process loads TensorFlow and trains 3 models. Under
# JAX, Keras loads TensorFlow later, to save the report's `.keras` files.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_command_prints_no_native_log_line_and_under_40_lines(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in kerasdistill_cli.QUIET_ENVIRONMENT
    }
    environment["KERAS_BACKEND"] = backend
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, kerasdistill_cli; sys.exit(kerasdistill_cli.main())",
            *["demo", "--epochs", "1", "--output", str(tmp_path)],
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).split("\n")
    assert [line for line in lines if NATIVE_LOG.search(line)] == []
    assert result.stderr == ""
    assert len(lines) < 40
    assert "Report written to" in result.stdout
