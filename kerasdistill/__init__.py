"""kerasdistill: knowledge distillation for Keras 3.

Example:

```python
import kerasdistill as kd

distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(4.0))
distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
distiller.fit(x, y, epochs=10)
```
"""

import importlib.util

from kerasdistill import cache
from kerasdistill import callbacks
from kerasdistill import feature_losses
from kerasdistill import logit_losses
from kerasdistill import losses
from kerasdistill import recipes
from kerasdistill import schedules
from kerasdistill import tfds_data
from kerasdistill import trial  # noqa: F401 (registers TrialDistiller for loading)
from kerasdistill.born_again import BornAgainResult
from kerasdistill.born_again import born_again
from kerasdistill.cache import cache_teacher_outputs
from kerasdistill.deep_supervision import DeepSupervision
from kerasdistill.distiller import Distiller
from kerasdistill.export import ExportReport
from kerasdistill.export import export_student
from kerasdistill.features import FeatureDistillation
from kerasdistill.logit_losses import DIST
from kerasdistill.logit_losses import DKD
from kerasdistill.losses import DistillationLoss
from kerasdistill.losses import LogitsDistillation
from kerasdistill.losses import RegressionDistillation
from kerasdistill.mutual import MutualLearning
from kerasdistill.reporting import format_report
from kerasdistill.reporting import report
from kerasdistill.self_distill import SelfDistiller
from kerasdistill.weighting import DifficultyWeighted

__version__ = "0.1.0"

__all__ = [
    "BornAgainResult",
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
    "export_student",
    "feature_losses",
    "format_report",
    "logit_losses",
    "losses",
    "recipes",
    "report",
    "schedules",
    "tfds_data",
]
if importlib.util.find_spec("keras_tuner") is not None:
    __all__.append("DistillerHyperModel")


def __getattr__(name):
    """Imports `DistillerHyperModel` (and KerasTuner) on first use."""
    if name == "DistillerHyperModel":
        from kerasdistill.tuner import DistillerHyperModel

        return DistillerHyperModel
    raise AttributeError(f"module 'kerasdistill' has no attribute '{name}'")
