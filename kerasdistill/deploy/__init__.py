"""Shipping the student: export with a parity check, the distillation
report and its plots, and the KerasTuner search.

- `export`: `export_student` to a SavedModel or TFLite file, checked by
  running the written file; `tf_files` writes and runs the files under
  TensorFlow, `export_worker` does it in a TensorFlow subprocess for a JAX
  or PyTorch student; `export_samples` reads the parity check's samples
  (an array, a dict or a list of them, one per input);
- `reporting` and `plots`: `report()` / `format_report()`, did the
  distillation pay off;
- `tuner` (imports KerasTuner on first use) and `trial`: the
  `DistillerHyperModel` and the `Distiller` each trial builds.

Example:

```python
import kerasdistill as kd

result = kd.deploy.export_student(distiller, "student.tflite", format="tflite")
```
"""

from kerasdistill.deploy import trial  # noqa: F401 (registers TrialDistiller for loading)
from kerasdistill.deploy.export import ExportReport
from kerasdistill.deploy.export import export_student
from kerasdistill.deploy.reporting import format_report
from kerasdistill.deploy.reporting import report

__all__ = ["ExportReport", "export_student", "format_report", "report"]
