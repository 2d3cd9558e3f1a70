"""The shared logprob computation: log-softmax of the logits at the target, in float32 whatever
the logits' dtype, over a whole batch."""

from __future__ import annotations

import torch

from treadle_models.logprobs import target_logprobs


def test_logprobs_are_the_log_softmax_at_the_targets_in_float32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g) * 4
    targets = torch.randint(0, 11, (2, 5), generator=g)
    lp = target_logprobs(logits, targets)
    want = torch.log_softmax(logits.double(), -1).gather(2, targets[..., None])[..., 0]
    assert lp.dtype == torch.float32 and lp.shape == (2, 5)
    torch.testing.assert_close(lp.double(), want, rtol=1e-6, atol=1e-6)
    half = target_logprobs(logits.bfloat16(), targets)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), want, rtol=0, atol=0.1)
