"""kerasdistill: knowledge distillation for Keras 3.

Example:

```python
import kerasdistill as kd

distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(4.0))
distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
distiller.fit(x, y, epochs=10)
```
"""

from kerasdistill import cache
from kerasdistill import losses
from kerasdistill.cache import cache_teacher_outputs
from kerasdistill.distiller import Distiller
from kerasdistill.features import FeatureDistillation
from kerasdistill.losses import DistillationLoss
from kerasdistill.losses import LogitsDistillation
from kerasdistill.losses import RegressionDistillation

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "DistillationLoss",
    "FeatureDistillation",
    "LogitsDistillation",
    "RegressionDistillation",
    "cache",
    "cache_teacher_outputs",
    "losses",
]
