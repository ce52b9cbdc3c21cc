"""Distilling transformers and language models (keras-hub models among
them): layer mapping between transformer stacks, attention transfer, and
sequence-level KD.

- `layer_mapping`: the `FeatureDistillation` losses between two
  transformer stacks (TinyBERT's uniform map, the last layers, or a dict);
- `attention`: `AttentionDistillation`, TinyBERT's attention MSE and
  MiniLM's attention KL on tapped attention scores;
- `sequence_kd`: `generate_transfer_set`, a teacher CausalLM's generations
  as the student's training set (Kim & Rush 2016);
- `causal_lm`: `CausalLMDistiller`, on-policy distillation of keras-hub
  causal LMs inside `fit()` (GKD) and a training step over chunks of
  positions that never holds the full logits;
- `on_policy`: the on-policy view of a step (the student's own
  continuations, generated inside the compiled step) and
  `prompt_completion_data`, the batches it trains on.

Nothing here imports keras-hub at import time: the stacks are found from
layer names and the attention from the layers' public
`return_attention_scores`. Padding masks in the feature losses live in
`kerasdistill.losses.masking` (`FeatureDistillation(mask="padding_mask")`).

Example:

```python
losses = kerasdistill.layer_mapping(teacher, student, attention="kl")
distiller = kerasdistill.Distiller(
    teacher, student, [kerasdistill.LogitsDistillation(2.0), *losses]
)
transfer = kerasdistill.generate_transfer_set(teacher_lm, prompts, max_length=64)
```
"""

from kerasdistill.transformers.attention import AttentionDistillation
from kerasdistill.transformers.attention import attention_kl
from kerasdistill.transformers.attention import attention_mse
from kerasdistill.transformers.causal_lm import CausalLMDistiller
from kerasdistill.transformers.layer_mapping import find_stack
from kerasdistill.transformers.layer_mapping import layer_mapping
from kerasdistill.transformers.on_policy import prompt_completion_data
from kerasdistill.transformers.sequence_kd import generate_transfer_set

__all__ = [
    "AttentionDistillation",
    "CausalLMDistiller",
    "attention_kl",
    "attention_mse",
    "find_stack",
    "generate_transfer_set",
    "layer_mapping",
    "prompt_completion_data",
]
