"""kerasdistill: knowledge distillation for Keras 3.

Example:

```python
import kerasdistill as kd

distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(4.0))
distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
distiller.fit(x, y, epochs=10)
```
"""

from kerasdistill import callbacks
from kerasdistill import losses
from kerasdistill import recipes
from kerasdistill import schedules
from kerasdistill import tfds_data
from kerasdistill.distiller import Distiller
from kerasdistill.features import FeatureDistillation
from kerasdistill.losses import DistillationLoss
from kerasdistill.losses import LogitsDistillation
from kerasdistill.losses import RegressionDistillation
from kerasdistill.reporting import format_report
from kerasdistill.reporting import report
from kerasdistill.weighting import DifficultyWeighted

__version__ = "0.1.0"

__all__ = [
    "DifficultyWeighted",
    "Distiller",
    "DistillationLoss",
    "FeatureDistillation",
    "LogitsDistillation",
    "RegressionDistillation",
    "callbacks",
    "format_report",
    "losses",
    "recipes",
    "report",
    "schedules",
    "tfds_data",
]
