"""Distilling transformers and language models (keras-hub models among
them): sequence-level KD.

Nothing here imports keras-hub at import time.

Example:

```python
transfer = kerasdistill.generate_transfer_set(teacher_lm, prompts, max_length=64)
```
"""

# Sequence-level KD.
from kerasdistill.transformers.sequence_kd import generate_transfer_set

__all__ = [
    # Sequence-level KD.
    "generate_transfer_set",
]
