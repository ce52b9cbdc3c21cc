"""Distilling transformers and language models (keras-hub models among
them): layer mapping between transformer stacks, attention transfer, and
sequence-level KD.

Nothing here imports keras-hub: the stacks are found from layer names and
the attention from the layers' public `return_attention_scores`. Padding
masks in the feature losses live in `kerasdistill.losses.masking`
(`FeatureDistillation(mask="padding_mask")`).

Example:

```python
losses = kerasdistill.layer_mapping(teacher, student, attention="kl")
distiller = kerasdistill.Distiller(
    teacher, student, [kerasdistill.LogitsDistillation(2.0), *losses]
)
```
"""

# Layer mapping and attention transfer.
from kerasdistill.transformers.attention import AttentionDistillation
from kerasdistill.transformers.attention import attention_kl
from kerasdistill.transformers.attention import attention_mse
from kerasdistill.transformers.layer_mapping import find_stack
from kerasdistill.transformers.layer_mapping import layer_mapping

# Sequence-level KD.

__all__ = [
    # Layer mapping and attention transfer.
    "AttentionDistillation",
    "attention_kl",
    "attention_mse",
    "find_stack",
    "layer_mapping",
    # Sequence-level KD.
]
