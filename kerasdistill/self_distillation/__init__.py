"""Self-distillation: a model learns from itself.

- `self_distiller`: `SelfDistiller`, whose teacher is a snapshot or the
  moving average of the model's own weights (`loss_choice` picks its loss
  from the compiled one);
- `born_again`: generations of the same architecture, each taught by the
  last;
- `deep_supervision`: auxiliary heads taught by the final head;
- `mutual`: several models teaching each other.

Example:

```python
import kerasdistill as kd

distiller = kd.self_distillation.SelfDistiller(model, teacher="ema")
```
"""

from kerasdistill.self_distillation.born_again import BornAgainResult
from kerasdistill.self_distillation.born_again import born_again
from kerasdistill.self_distillation.deep_supervision import DeepSupervision
from kerasdistill.self_distillation.mutual import MutualLearning
from kerasdistill.self_distillation.self_distiller import SelfDistiller

__all__ = [
    "BornAgainResult",
    "DeepSupervision",
    "MutualLearning",
    "SelfDistiller",
    "born_again",
]
