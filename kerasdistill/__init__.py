"""kerasdistill: knowledge distillation for Keras 3.

The package is grouped by concern: the core (`distiller`, `taps`,
`teachers`) at the top, then `losses`, `schedules`, `self_distillation`,
`transformers`, `data` and `deploy`. Everything a user needs is also here, flat:
`kerasdistill.X`.

Example:

```python
import kerasdistill as kd

distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(4.0))
distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
distiller.fit(x, y, epochs=10)
```
"""

import importlib.util as _importlib_util
import sys as _sys

from kerasdistill import data
from kerasdistill import deploy
from kerasdistill import losses
from kerasdistill import schedules
from kerasdistill import self_distillation
from kerasdistill import transformers
from kerasdistill.data import cache
from kerasdistill.data import tfds as tfds_data
from kerasdistill.data.cache import cache_teacher_outputs
from kerasdistill.deploy.export import ExportReport
from kerasdistill.deploy.export import export_student
from kerasdistill.deploy.reporting import format_report
from kerasdistill.deploy.reporting import report
from kerasdistill.distiller import Distiller
from kerasdistill.labels import partial_labels
from kerasdistill.losses import CTKD
from kerasdistill.losses import DIST
from kerasdistill.losses import DKD
from kerasdistill.losses import DifficultyWeighted
from kerasdistill.losses import DistillationLoss
from kerasdistill.losses import FeatureDistillation
from kerasdistill.losses import LogitsDistillation
from kerasdistill.losses import RegressionDistillation
from kerasdistill.schedules import callbacks
from kerasdistill.schedules import recipes
from kerasdistill.self_distillation import BornAgainResult
from kerasdistill.self_distillation import DeepSupervision
from kerasdistill.self_distillation import MutualLearning
from kerasdistill.self_distillation import SelfDistiller
from kerasdistill.self_distillation import born_again
from kerasdistill.transformers import AttentionDistillation
from kerasdistill.transformers import CausalLMDistiller
from kerasdistill.transformers import generate_transfer_set
from kerasdistill.transformers import layer_mapping

# The one source of the version: pyproject.toml reads it (setuptools `attr:`).
__version__ = "0.2.0"

# The module paths of v0.1.0, kept: `kerasdistill.callbacks`,
# `kerasdistill.recipes`, `kerasdistill.tfds_data`, `kerasdistill.cache`
# and the function modules `feature_losses` / `logit_losses` (now all in
# `kerasdistill.losses`). Registered in `sys.modules`, so
# `from kerasdistill.callbacks import AlphaScheduler` works as before.
feature_losses = losses.feature_functions
logit_losses = losses
_MOVED_MODULES = {
    "cache": cache,
    "callbacks": callbacks,
    "feature_losses": feature_losses,
    "logit_losses": logit_losses,
    "recipes": recipes,
    "tfds_data": tfds_data,
}
for _name, _module in _MOVED_MODULES.items():
    _sys.modules[f"{__name__}.{_name}"] = _module
del _name, _module

__all__ = [
    "AttentionDistillation",
    "BornAgainResult",
    "CTKD",
    "CausalLMDistiller",
    "DIST",
    "DKD",
    "DeepSupervision",
    "DifficultyWeighted",
    "DistillationLoss",
    "Distiller",
    "ExportReport",
    "FeatureDistillation",
    "LogitsDistillation",
    "MutualLearning",
    "RegressionDistillation",
    "SelfDistiller",
    "born_again",
    "cache",
    "cache_teacher_outputs",
    "callbacks",
    "data",
    "deploy",
    "export_student",
    "feature_losses",
    "format_report",
    "generate_transfer_set",
    "layer_mapping",
    "logit_losses",
    "losses",
    "partial_labels",
    "recipes",
    "report",
    "schedules",
    "self_distillation",
    "tfds_data",
    "transformers",
]
if _importlib_util.find_spec("keras_tuner") is not None:
    __all__.append("DistillerHyperModel")


def __getattr__(name):
    """Imports `DistillerHyperModel` (and KerasTuner) on first use."""
    if name == "DistillerHyperModel":
        from kerasdistill.deploy.tuner import DistillerHyperModel

        return DistillerHyperModel
    raise AttributeError(f"module 'kerasdistill' has no attribute '{name}'")
