"""Schedules of alpha, temperatures and loss weights during `fit()`.

- `curves`: pure functions of the step (`Linear`, `Cosine`,
  `ExponentialDecay`, `Piecewise`, `WarmupHold`, `Constant`), exported
  here as `kerasdistill.schedules.X`;
- `callbacks`: thin callbacks that assign a schedule's value to a
  `Distiller`'s variables (`kerasdistill.callbacks`);
- `recipes`: ready-made callbacks for common recipes
  (`kerasdistill.recipes`).

Example:

```python
import kerasdistill as kd

callback = kd.callbacks.AlphaScheduler(kd.schedules.Linear(0.9, 0.3, steps=9))
```
"""

from kerasdistill.schedules import callbacks
from kerasdistill.schedules import recipes
from kerasdistill.schedules.curves import Constant
from kerasdistill.schedules.curves import Cosine
from kerasdistill.schedules.curves import ExponentialDecay
from kerasdistill.schedules.curves import Linear
from kerasdistill.schedules.curves import Piecewise
from kerasdistill.schedules.curves import Schedule
from kerasdistill.schedules.curves import WarmupHold
from kerasdistill.schedules.curves import get

__all__ = [
    "Constant",
    "Cosine",
    "ExponentialDecay",
    "Linear",
    "Piecewise",
    "Schedule",
    "WarmupHold",
    "callbacks",
    "get",
    "recipes",
]
