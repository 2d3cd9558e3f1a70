"""The one logprob computation that trainer and sampler both use, so that they agree.

    logprob[b, t] = log_softmax(logits[b, t])[target[b, t]]

computed in float32 whatever the model's dtype, as a per-token cross entropy with
reduction="none" over the whole batch (slicing logits per row would make backward zero-fill a full
gradient per slice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_logprobs(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target token under the logits, shape [B, T], float32."""
    B, T, V = logits_BTV.shape
    nll = F.cross_entropy(
        logits_BTV.float().reshape(B * T, V), targets_BT.reshape(B * T), reduction="none"
    )
    return -nll.reshape(B, T)
