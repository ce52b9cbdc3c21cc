"""Distillation losses, one concern a module.

- `base`: the protocol every loss follows (`DistillationLoss`) and the
  base of the losses with a temperature (`TemperedLoss`);
- `logits`: Hinton KD (`LogitsDistillation`); `dkd`: DKD; `dist`: DIST;
- `divergences`: the divergences of language-model distillation (reverse
  KL, generalized JSD, skew KL, skew reverse KL, TVD), `loss=` options of
  `LogitsDistillation`;
- `chunked`: token-level KD from hidden states over chunks of positions,
  whose memory does not grow with the vocabulary
  (`chunked_token_divergence`, `ChunkedTokenDistillation`, and
  `chunked_token_losses`, the per-position values of several losses at
  once, which `kerasdistill.CausalLMDistiller(chunk_size=...)` trains on);
- `top_k`: token-level KD on the teacher's top-k logits (large vocabularies);
  `ctkd`: CTKD (a learned, curriculum temperature); `standardization`:
  logit standardization, an option of the logit losses;
- `regression`: `RegressionDistillation`;
- `features`: `FeatureDistillation` on tapped layers, with the per-sample
  functions of `feature_functions` and the learned projections of
  `adapters`;
- `masking`: per-position weights from a padding mask, for losses on
  sequences (`FeatureDistillation(mask="padding_mask")`);
- `weighting`: `DifficultyWeighted`, per-sample weights on any loss;
- `keras_compat`: `keras.distillation` loss objects translated to these.

Example:

```python
import kerasdistill as kd

losses = [kd.losses.LogitsDistillation(temperature=4.0),
          kd.losses.FeatureDistillation("mse", "teacher_block", "student_block")]
```
"""

from kerasdistill.losses.base import DistillationLoss
from kerasdistill.losses.base import TemperedLoss
from kerasdistill.losses.chunked import ChunkedTokenDistillation
from kerasdistill.losses.chunked import chunked_token_divergence
from kerasdistill.losses.chunked import chunked_token_losses
from kerasdistill.losses.ctkd import CTKD
from kerasdistill.losses.ctkd import gradient_reversal
from kerasdistill.losses.dist import DIST
from kerasdistill.losses.dist import dist
from kerasdistill.losses.divergences import logits_generalized_jsd
from kerasdistill.losses.divergences import logits_reverse_kl
from kerasdistill.losses.divergences import logits_skew_kl
from kerasdistill.losses.divergences import logits_skew_reverse_kl
from kerasdistill.losses.divergences import logits_tvd
from kerasdistill.losses.dkd import DKD
from kerasdistill.losses.dkd import decoupled_kd
from kerasdistill.losses.feature_functions import attention_transfer
from kerasdistill.losses.feature_functions import cosine_distance
from kerasdistill.losses.feature_functions import gram_matrix
from kerasdistill.losses.feature_functions import hint_mse
from kerasdistill.losses.feature_functions import pkt
from kerasdistill.losses.feature_functions import rkd_angle
from kerasdistill.losses.feature_functions import rkd_distance
from kerasdistill.losses.feature_functions import similarity_preserving
from kerasdistill.losses.features import FeatureDistillation
from kerasdistill.losses.logits import LogitsDistillation
from kerasdistill.losses.logits import logits_kl_divergence
from kerasdistill.losses.logits import logits_soft_cross_entropy
from kerasdistill.losses.regression import RegressionDistillation
from kerasdistill.losses.regression import teacher_bounded_regression
from kerasdistill.losses.standardization import standardize_logits
from kerasdistill.losses.top_k import top_k_divergence
from kerasdistill.losses.top_k import top_k_kl_divergence
from kerasdistill.losses.top_k import top_k_soft_cross_entropy
from kerasdistill.losses.top_k import top_k_targets
from kerasdistill.losses.weighting import DifficultyWeighted

__all__ = [
    "CTKD",
    "ChunkedTokenDistillation",
    "DIST",
    "DKD",
    "DifficultyWeighted",
    "DistillationLoss",
    "FeatureDistillation",
    "LogitsDistillation",
    "RegressionDistillation",
    "TemperedLoss",
    "attention_transfer",
    "chunked_token_divergence",
    "chunked_token_losses",
    "cosine_distance",
    "decoupled_kd",
    "dist",
    "gradient_reversal",
    "gram_matrix",
    "hint_mse",
    "logits_generalized_jsd",
    "logits_kl_divergence",
    "logits_reverse_kl",
    "logits_skew_kl",
    "logits_skew_reverse_kl",
    "logits_soft_cross_entropy",
    "logits_tvd",
    "pkt",
    "rkd_angle",
    "rkd_distance",
    "similarity_preserving",
    "standardize_logits",
    "teacher_bounded_regression",
    "top_k_divergence",
    "top_k_kl_divergence",
    "top_k_soft_cross_entropy",
    "top_k_targets",
]
