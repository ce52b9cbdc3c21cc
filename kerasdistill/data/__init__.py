"""Data for distillation.

- `cache`: the teacher's outputs computed once
  (`kerasdistill.cache_teacher_outputs`), from the batches that
  `input_batches` reads, after `randomness` checked that the data is not
  randomly augmented; `cached_batches` feeds them to `fit()` the cheapest
  way on each backend; `top_k_outputs` stores the teacher's top-k logits
  and indices instead of its full outputs when every loss is top-k;
- `semi_supervised`: `labeled_and_unlabeled`, a labeled and an unlabeled set interleaved in
  one dataset with partial labels (`kerasdistill.partial_labels`), for one
  `fit()`;
- `tfds`: TensorFlow Datasets splits without surprise downloads
  (`kerasdistill.tfds_data`).

Example:

```python
import kerasdistill as kd

losses = [kd.LogitsDistillation(temperature=4.0)]
cached = kd.data.cache_teacher_outputs(teacher, (x, y), losses, batch_size=64)
```
"""

from kerasdistill.data import cache
from kerasdistill.data import tfds
from kerasdistill.data.cache import cache_teacher_outputs
from kerasdistill.data.semi_supervised import labeled_and_unlabeled

__all__ = ["cache", "cache_teacher_outputs", "labeled_and_unlabeled", "tfds"]
