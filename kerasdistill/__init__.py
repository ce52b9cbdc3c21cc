"""kerasdistill: knowledge distillation for Keras 3.

Example:

```python
import kerasdistill as kd

distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(4.0))
distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
distiller.fit(x, y, epochs=10)
```
"""

from kerasdistill import feature_losses
from kerasdistill import logit_losses
from kerasdistill import losses
from kerasdistill.distiller import Distiller
from kerasdistill.features import FeatureDistillation
from kerasdistill.logit_losses import DIST
from kerasdistill.logit_losses import DKD
from kerasdistill.losses import DistillationLoss
from kerasdistill.losses import LogitsDistillation
from kerasdistill.losses import RegressionDistillation

__version__ = "0.1.0"

__all__ = [
    "DIST",
    "DKD",
    "Distiller",
    "DistillationLoss",
    "FeatureDistillation",
    "LogitsDistillation",
    "RegressionDistillation",
    "feature_losses",
    "logit_losses",
    "losses",
]
