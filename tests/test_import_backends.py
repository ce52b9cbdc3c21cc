"""`import kerasdistill` under JAX or PyTorch does not import TensorFlow,
nor, on any backend, the optional KerasTuner and keras-hub.

TensorFlow stays a dependency for what is TensorFlow by nature (export,
tf.data caches, TFDS, tf.distribute), imported when such a feature is used.
Each check runs in a fresh interpreter with the backend set; on failure it
names the import chain that first reached `tensorflow`.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import pytest

PROBE = r"""
import json, sys, traceback


class FirstTensorFlowImport:
    stack = None

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or FirstTensorFlowImport.stack is not None:
            return None
        stack = traceback.extract_stack()[:-1]
        # An import, not a look-up (importlib.util.find_spec) that finds it.
        if len(stack) > 1 and stack[-2].name == "_find_and_load_unlocked":
            frames = [f for f in stack if not f.filename.startswith("<frozen")]
            FirstTensorFlowImport.stack = "".join(traceback.format_list(frames))
        return None


sys.meta_path.insert(0, FirstTensorFlowImport())
import keras

after_keras = "tensorflow" in sys.modules
import kerasdistill

print("RESULT " + json.dumps({
    "backend": keras.backend.backend(),
    "keras_imports_tensorflow": after_keras,
    "tensorflow": "tensorflow" in sys.modules,
    "stack": FirstTensorFlowImport.stack,
    "optional": sorted(m for m in ("keras_hub", "keras_tuner") if m in sys.modules),
}))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_import_does_not_import_tensorflow(backend):
    current = keras.backend.backend()
    if current in ("jax", "torch") and backend != current:
        # CI checks each backend in its own run (and both on TensorFlow).
        pytest.skip(f"checked when KERAS_BACKEND={backend}")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(
            f"{backend} is not installed: pip install 'kerasdistill[{backend}]'"
        )
    env = dict(os.environ, KERAS_BACKEND=backend)
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, (
        f"`import kerasdistill` failed under KERAS_BACKEND={backend}:\n"
        f"{run.stderr[-4000:]}"
    )
    found = json.loads(lines[-1][len("RESULT ") :])
    assert found["backend"] == backend
    if found["keras_imports_tensorflow"]:
        pytest.skip(
            f"keras itself imports tensorflow under {backend}:\n{found['stack']}"
        )
    assert not found["tensorflow"], (
        f"`import kerasdistill` imported tensorflow under KERAS_BACKEND={backend}; "
        f"first import:\n{found['stack']}"
    )
    assert found["optional"] == [], (
        f"`import kerasdistill` imported the optional {found['optional']}: they "
        "must be imported where they are used (kd.DistillerHyperModel, the "
        "keras-hub helpers)."
    )
