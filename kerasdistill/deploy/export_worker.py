"""The TensorFlow-backend subprocess that exports a JAX or PyTorch student.

The student is saved to a `.keras` file, which a kept-alive Python process
with `KERAS_BACKEND=tensorflow` loads and exports with `tf_files`; it
writes the file's outputs on the samples back for the parity check. The
samples (one array per student input) travel as `.npz` files."""

import atexit
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback

import keras
import numpy as np
from keras import tree

from kerasdistill.deploy import tf_files

# The lines of a stopped export subprocess's log quoted in the error.
_STDERR_LINES = 25


def custom_modules(student, backend):
    """The modules defining the student's non-Keras classes, which the
    subprocess imports (registering them) before it loads the student.
    Refuses classes of `__main__`, which a subprocess cannot import."""
    try:
        config = keras.saving.serialize_keras_object(student)
    except (NotImplementedError, TypeError, ValueError) as error:
        raise _unsavable(error, backend) from error
    config = {k: v for k, v in config.items() if k != "compile_config"}
    classes = {}
    _collect_classes(config, classes)
    stranded = sorted(name for name, module in classes.items() if module == "__main__")
    if stranded:
        raise ValueError(
            f"Expected the student's classes to be importable, but "
            f"{', '.join(stranded)} {'is' if len(stranded) == 1 else 'are'} "
            f"defined in __main__. The {backend} student is exported by "
            "loading a .keras copy in a TensorFlow-backend subprocess, which "
            "cannot import the script that is running. Move the class to a "
            "module (registered with keras.saving."
            "register_keras_serializable), or pass via='backend'"
            + (" to export with jax2tf in this process." if backend == "jax" else ".")
        )
    return sorted(set(module for module in classes.values() if module))


def _collect_classes(config, classes):
    if isinstance(config, dict):
        if "class_name" in config and "config" in config:
            module = _class_module(config)
            if module is not None:
                classes[config.get("registered_name") or config["class_name"]] = module
        for value in config.values():
            _collect_classes(value, classes)
    elif isinstance(config, (list, tuple)):
        for value in config:
            _collect_classes(value, classes)


def _class_module(config):
    """The module of a serialized object's class when it is not Keras'."""
    registered = config.get("registered_name")
    if registered and ">" in registered:
        found = keras.saving.get_registered_object(registered)
        return getattr(found, "__module__", None)
    module = config.get("module")
    if not isinstance(module, str) or module.split(".")[0] in ("keras", "builtins"):
        return None
    return module


def export_in_subprocess(
    student, path, settings, samples, calibration, modules, backend
):
    with tempfile.TemporaryDirectory() as scratch:
        model_file = os.path.join(scratch, "student.keras")
        try:
            student.save(model_file)
        except (NotImplementedError, TypeError, ValueError) as error:
            raise _unsavable(error, backend) from error
        _save_arrays(os.path.join(scratch, "samples.npz"), samples)
        if calibration is not None:
            _save_arrays(os.path.join(scratch, "calibration.npz"), calibration)
        job = dict(
            settings,
            model=model_file,
            path=os.path.abspath(path),
            modules=modules,
            sys_path=[p or os.getcwd() for p in sys.path],
        )
        with open(os.path.join(scratch, "job.json"), "w", encoding="utf-8") as file:
            json.dump(job, file)
        _WORKER.run(scratch, modules, backend)
        with open(os.path.join(scratch, "result.json"), encoding="utf-8") as file:
            result = json.load(file)
        if not result["ok"]:
            raise _subprocess_error(result, backend)
        outputs = os.path.join(scratch, "outputs.npy")
        return np.load(outputs) if os.path.exists(outputs) else None


def _save_arrays(file, structure):
    """The arrays of an input structure (one array, a dict or a list of
    them), flattened in `keras.tree` order, as one `.npz` file."""
    arrays = tree.flatten(structure)
    np.savez(file, **{f"input_{i}": array for i, array in enumerate(arrays)})


def _load_arrays(file, structure):
    """The arrays of `_save_arrays`, packed as `structure` again."""
    with np.load(file) as stored:
        arrays = [stored[f"input_{i}"] for i in range(len(stored.files))]
    return tree.pack_sequence_as(structure, arrays)


class _Worker:
    """A Python process with `KERAS_BACKEND=tensorflow` (and no GPU) that
    runs export jobs one at a time. It starts on the first export of a JAX
    or PyTorch student and serves the later ones (importing TensorFlow costs
    seconds), and exits with this process. It is replaced when it died, or
    when a module defining the student's classes changed on disk since it
    imported it (it would build the student from the old code)."""

    def __init__(self):
        self._process = None
        self._log = None
        self._imported = {}
        self._lock = threading.Lock()

    def run(self, scratch, modules, backend):
        with self._lock:
            if self._process is not None and (
                self._process.poll() is not None or self._stale(modules)
            ):
                self.stop()
            if self._process is None:
                self._start()
            try:
                self._process.stdin.write(scratch + "\n")
                self._process.stdin.flush()
                reply = self._process.stdout.readline()
            except OSError:
                reply = ""
            if reply.strip() != scratch:
                try:  # it closed its replies: it is exiting
                    status = self._process.wait(timeout=None if not reply else 0)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    status = self._process.wait()
                log = self._tail()
                self.stop()
                raise RuntimeError(
                    "The TensorFlow-backend subprocess that exports the "
                    f"{backend} student stopped (exit status {status}) without "
                    "a result: the converter may have aborted. Its last output "
                    "lines:\n" + log
                )
            for module in modules:
                self._imported.setdefault(module, _modified(module))

    def stop(self):
        process, self._process = self._process, None
        self._imported = {}
        if process is not None:
            try:
                process.stdin.close()
                process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _start(self):
        package_root = os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        )
        env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="-1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root]
            + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from kerasdistill.deploy.export_worker import serve; serve()",
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    def _stale(self, modules):
        return any(
            module in self._imported and self._imported[module] != _modified(module)
            for module in modules
        )

    def _tail(self):
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return "\n".join(lines[-_STDERR_LINES:])


def _modified(module):
    """When the file of `module` was last modified (`None` if unknown)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    try:
        return os.path.getmtime(file) if file else None
    except OSError:
        return None


_WORKER = _Worker()


atexit.register(_WORKER.stop)


def _unsavable(error, backend):
    return ValueError(
        f"Expected a student that Keras can save to a .keras file: the "
        f"{backend} student is exported by a TensorFlow-backend subprocess "
        f"that loads such a copy. Received an error from Keras: {error}. "
        "Give its custom layers and models a get_config() and register them "
        "with keras.saving.register_keras_serializable"
        + (
            ", or pass via='backend' to export with jax2tf in this process."
            if backend == "jax"
            else "."
        )
    )


def _subprocess_error(result, backend):
    if result["stage"] == "load":
        return ValueError(
            f"The {backend} student was saved to a .keras file, but the "
            "TensorFlow-backend subprocess that exports it could not load it: "
            f"{result['type']}: {result['message']}. Make it loadable with "
            "keras.saving.load_model under KERAS_BACKEND=tensorflow: register "
            "its custom layers with keras.saving.register_keras_serializable "
            "in an importable module (not __main__), with a get_config() "
            "that takes every constructor argument, and give Lambda layers "
            "an output_shape"
            + (
                ", or pass via='backend' to export with jax2tf in this process."
                if backend == "jax"
                else "."
            )
        )
    return RuntimeError(
        f"Exporting the {backend} student in the TensorFlow-backend "
        f"subprocess failed: {result['type']}: {result['message']}\n"
        f"Subprocess traceback:\n{result['traceback']}"
    )


def serve():
    """The subprocess: runs the job of each scratch folder named on stdin
    and answers with the same name on its own stdout. Anything printed
    (TensorFlow's converter logs) goes to stderr, not to the replies."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in iter(sys.stdin.readline, ""):
        scratch = line.strip()
        if scratch:
            _run_job(scratch)
            keras.backend.clear_session()
            replies.write(scratch + "\n")
            replies.flush()


def _run_job(scratch):
    """Loads the `.keras` student of a job under TensorFlow, writes the
    export and, for a SavedModel, its outputs on the samples; writes
    `result.json`."""
    stage = "load"
    try:
        with open(os.path.join(scratch, "job.json"), encoding="utf-8") as file:
            job = json.load(file)
        sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]
        for module in job["modules"]:
            importlib.import_module(module)
        # The file was written a moment ago from the caller's own model, so
        # its Lambda layers may be deserialized.
        model = keras.saving.load_model(job["model"], compile=False, safe_mode=False)
        signature = tf_files.input_signature(model)
        stage = "export"
        structure = signature[0]
        samples = _load_arrays(os.path.join(scratch, "samples.npz"), structure)
        calibration_file = os.path.join(scratch, "calibration.npz")
        calibration = (
            _load_arrays(calibration_file, structure)
            if os.path.exists(calibration_file)
            else None
        )
        outputs = tf_files.export(
            model, signature, job["path"], job, samples, calibration, {}
        )
        if outputs is not None:
            np.save(os.path.join(scratch, "outputs.npy"), outputs)
        result = {"ok": True}
    except Exception as error:  # noqa: BLE001 (reported to the caller)
        result = {
            "ok": False,
            "stage": stage,
            "type": type(error).__name__,
            "message": str(error),
            "traceback": traceback.format_exc(),
        }
    with open(os.path.join(scratch, "result.json"), "w", encoding="utf-8") as file:
        json.dump(result, file)
