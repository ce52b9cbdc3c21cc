"""The entry point of the `kerasdistill` command, which loads TensorFlow
quietly.

TensorFlow prints C++ log lines to the process's standard error while it
loads (`I0000 ... cudart_stub.cc ...`, the CPU-feature notice), before any
log level applies, and Keras loads it as soon as `kerasdistill` is
imported. This module lives outside the `kerasdistill` package, so that it
runs first: it sets the log levels (`QUIET_ENVIRONMENT`; a variable you set
yourself is kept), then imports TensorFlow and the command (`kerasdistill.cli`, and with
it Keras) with native code's standard error captured
(`native_stderr_captured`), and runs it. `python -m kerasdistill` imports
the package first and so shows TensorFlow's load-time lines.
"""

import contextlib
import os
import sys
import tempfile

# Set before TensorFlow loads. TF_CPP_MIN_LOG_LEVEL=3 leaves only fatal C++
# logs of TensorFlow and LiteRT (the TFLite converter, `Reading SavedModel`,
# the CUDA probes); their errors reach Python as exceptions. The export
# subprocess of a JAX or PyTorch student inherits it.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def main(argv=None):
    """Runs `kerasdistill.cli.main(argv)` with TensorFlow loaded quietly.

    Returns:
        The command's exit status.
    """
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    with native_stderr_captured():
        # Keras loads TensorFlow on any backend to save a `.keras` file (the
        # report does): load it now, while its lines are captured.
        import tensorflow  # noqa: F401

        from kerasdistill import cli
    return cli.main(argv)


@contextlib.contextmanager
def native_stderr_captured():
    """Sends what is written to file descriptor 2 (native code's standard
    error) to a temporary file for the duration of the block; when the
    block raises, the captured text is printed before the error. Python's
    `sys.stderr` (warnings, tracebacks) keeps writing where it did.

    Example:

    ```python
    import kerasdistill_cli

    with kerasdistill_cli.native_stderr_captured():
        import tensorflow  # its load-time C++ log lines are not shown
    ```
    """
    python_stderr = sys.stderr
    python_stderr.flush()
    try:
        terminal = os.dup(2)
    except OSError:  # no file descriptor 2 (a detached process)
        yield
        return
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        if _file_descriptor(python_stderr) == 2:
            sys.stderr = open(os.dup(terminal), "w", buffering=1, errors="replace")
        try:
            yield
        except BaseException:
            _restore(terminal, python_stderr)
            log.seek(0)
            python_stderr.write(log.read().decode("utf-8", "replace"))
            raise
        _restore(terminal, python_stderr)


def _file_descriptor(stream):
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _restore(terminal, python_stderr):
    if sys.stderr is not python_stderr:
        sys.stderr.close()
        sys.stderr = python_stderr
    os.dup2(terminal, 2)
    os.close(terminal)
