"""The chunked unembedding sweep equals autograd over full logits: the same logprobs as
treadle_models.target_logprobs and the same gradients for the hidden states and the lm_head LoRA
matrices, whatever the chunk size and whether a chunk of one adapter folds its LoRA term into
the base products (StackedHead) and whether the wide products run on oneDNN or torch.mm; a
non-finite loss is reported for its segment alone."""

from __future__ import annotations

import pytest
import torch

from treadle_models.logprobs import target_logprobs
from treadle_trainer import head
from treadle_trainer.head import HeadSegment, StackedHead, unembed

V, H, M = 1000, 16, 40
SEGMENTS = [(0, 12, 4, 0.5), (12, 20, None, 1.0), (32, 8, 2, 2.0)]  # start, count, rank, scale


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    """‖got − want‖ ≤ 1e-5·‖want‖ (float32 sums in another order differ by a few ulps)."""
    assert float((got - want).double().norm()) <= 1e-5 * float(want.double().norm())


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(M, H, generator=g)
    weight = torch.randn(V, H, generator=g) / 4
    targets = torch.randint(0, V, (M,), generator=g)
    loras = [
        None if r is None else (torch.randn(r, H, generator=g), torch.randn(V, r, generator=g))
        for *_, r, _ in SEGMENTS
    ]
    coefficients = torch.randn(M, generator=g)
    return hidden, weight, targets, loras, coefficients


def _loss(coefficients: torch.Tensor, start: int):
    """A per-token loss that is not linear in lp: c·lp + ½·lp²."""

    def token_loss(lp: torch.Tensor, offset: int, n: int) -> torch.Tensor:
        c = coefficients[start + offset : start + offset + n]
        return c * lp + 0.5 * lp.square()

    return token_loss


def _reference(hidden, weight, targets, loras, coefficients, forward_only: set[int]):
    hidden = hidden.clone().requires_grad_()
    leaves = [None if w is None else tuple(t.clone().requires_grad_() for t in w) for w in loras]
    parts = []
    for (start, count, _, scale), lora in zip(SEGMENTS, leaves, strict=True):
        h = hidden[start : start + count]
        z = h @ weight.t()
        if lora is not None:
            z = z + (h @ lora[0].t()) @ lora[1].t() * scale
        parts.append(z)
    lp = target_logprobs(torch.cat(parts)[None], targets[None])[0]
    total = sum(
        _loss(coefficients, start)(lp[start : start + count], 0, count).sum()
        for i, (start, count, _, _) in enumerate(SEGMENTS)
        if i not in forward_only
    )
    total.backward()
    grads = [None if w is None else (w[0].grad, w[1].grad) for w in leaves]
    return lp.detach(), hidden.grad, grads


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 7, 64])
def test_the_sweep_equals_autograd_over_full_logits(chunk_rows, stacked, onednn, monkeypatch):
    calls = []
    if not onednn:
        monkeypatch.setattr(head, "_ONEDNN_LINEAR", None)
    elif head._ONEDNN_LINEAR is None:
        pytest.skip("no oneDNN linear on this build or CPU")
    else:
        linear = head._ONEDNN_LINEAR

        def counted(*args):
            calls.append(args[0].shape)
            return linear(*args)

        monkeypatch.setattr(head, "_ONEDNN_LINEAR", counted)
    hidden, weight, targets, loras, coefficients = _inputs(0)
    forward_only = {1}
    segments = [
        HeadSegment(
            start, count,
            None if lora is None else (lora[0], lora[1].t().contiguous(), scale),
            None if i in forward_only else _loss(coefficients, start),
        )
        for i, ((start, count, _, scale), lora) in enumerate(zip(SEGMENTS, loras, strict=True))
    ]  # fmt: skip
    out = unembed(hidden, weight, targets, segments, chunk_rows, StackedHead() if stacked else None)
    lp, grad_hidden, lora_grads = _reference(
        hidden, weight, targets, loras, coefficients, forward_only
    )
    torch.testing.assert_close(out.logprobs, lp, rtol=1e-5, atol=1e-5)
    assert out.grad_hidden is not None
    _close(out.grad_hidden, grad_hidden)
    assert not out.grad_hidden[12:32].any()  # the forward-only segment has no gradient
    assert out.lora_grads[1] is None and out.finite == [True, True, True]
    assert bool(calls) == onednn  # every wide product of a float32 CPU sweep goes to oneDNN
    for got, want in zip(out.lora_grads, lora_grads, strict=True):
        assert (got is None) == (want is None)
        if want is not None and got is not None:
            _close(got[0], want[0])
            _close(got[1].t(), want[1])  # the sweep hands back dBᵀ


def test_a_non_finite_loss_is_reported_for_its_segment_only():
    hidden, weight, targets, _, coefficients = _inputs(1)

    def overflowing(lp: torch.Tensor, offset: int, n: int) -> torch.Tensor:
        return torch.exp(-lp * 1e4)

    segments = [
        HeadSegment(0, 20, None, _loss(coefficients, 0)),
        HeadSegment(20, 20, None, overflowing),
    ]
    out = unembed(hidden, weight, targets, segments, 8)
    assert out.finite == [True, False]
    assert torch.isfinite(out.logprobs).all()
