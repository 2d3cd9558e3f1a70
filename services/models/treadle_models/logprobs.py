"""Target logprobs from full logits: the sampler's computation, and the reference for the trainer.

    logprob[b, t] = log_softmax(logits[b, t])[target[b, t]]

computed in float32 whatever the model's dtype, as a per-token cross entropy with
reduction="none" over the whole batch (slicing logits per row would make backward zero-fill a full
gradient per slice). The trainer computes the same formula in its chunked head sweep
(treadle_trainer/head.py), which never holds the full logits; tests check the two agree.
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
