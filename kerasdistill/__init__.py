"""kerasdistill: knowledge distillation for Keras 3.

Example:

```python
import kerasdistill as kd

distiller = kd.Distiller(teacher, student, kd.LogitsDistillation(4.0))
distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
distiller.fit(x, y, epochs=10)
```
"""

from kerasdistill import losses
from kerasdistill.born_again import BornAgainResult
from kerasdistill.born_again import born_again
from kerasdistill.deep_supervision import DeepSupervision
from kerasdistill.distiller import Distiller
from kerasdistill.features import FeatureDistillation
from kerasdistill.losses import DistillationLoss
from kerasdistill.losses import LogitsDistillation
from kerasdistill.losses import RegressionDistillation
from kerasdistill.mutual import MutualLearning
from kerasdistill.self_distill import SelfDistiller

__version__ = "0.1.0"

__all__ = [
    "BornAgainResult",
    "DeepSupervision",
    "Distiller",
    "DistillationLoss",
    "FeatureDistillation",
    "LogitsDistillation",
    "MutualLearning",
    "RegressionDistillation",
    "SelfDistiller",
    "born_again",
    "losses",
]
