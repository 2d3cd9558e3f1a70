"""The unembedding, the target logprobs and the loss gradient in one chunked sweep.

With a 49152-token vocabulary the unembedding dominates a small model's pass, and autograd would
hold three [tokens, vocab] float32 tensors (logits, log-softmax, their gradient): hundreds of MB
per wave, allocated and page-faulted anew on every pass. Every Treadle loss is a sum of per-token
functions of the target logprob lp, so dL/dlp of a token is known as soon as its lp is. Each
chunk of rows therefore computes, and then drops, its logits; a chunk may hold the rows of
several segments (one segment = one op = one adapter), each with its own LoRA term and loss:

    z   = h·Wᵀ + ((h·Aᵀ)·s)·Bᵀ                 (the LoRA term when the adapter trains lm_head)
    lp  = z[target] − logsumexp(z)             (float32, as treadle_models.target_logprobs)
    g   = dL/dlp                                (autograd of the op's loss on this chunk's lp)
    dz  = g·(onehot(target) − softmax(z))
    dh  = dz·W + ((dz·B)·s)·A      dB = dzᵀ·((h·Aᵀ)·s)      dA = s·(dz·B)ᵀ·h

Key decision: the head's backward happens during the forward sweep. It costs the same matmuls as
autograd (one forward, one input-gradient product) but works in one chunk of memory; the caller
backpropagates dh through the decoder. A segment whose loss is not finite is reported so that
the caller can drop its gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# per-token losses [n] of an op's tokens [offset, offset + n), from their logprobs [n]
TokenLoss = Callable[[torch.Tensor, int, int], torch.Tensor]


@dataclass(frozen=True)
class HeadSegment:
    """One op's contiguous rows of the hidden states."""

    start: int
    count: int
    lora: tuple[torch.Tensor, torch.Tensor, float] | None  # lm_head (A [r, H], Bᵀ [r, V], scale)
    loss: TokenLoss | None  # None: forward only, no gradient


@dataclass
class HeadOutput:
    """Logprobs of every row and, when some segment trains, the gradients."""

    logprobs: torch.Tensor  # [M] float32
    grad_hidden: torch.Tensor | None  # [M, H]; zero on rows of forward-only segments
    lora_grads: list[tuple[torch.Tensor, torch.Tensor] | None]  # per segment (dA, dBᵀ), float32
    finite: list[bool]  # per segment: its loss is finite


@torch.no_grad()
def unembed(
    hidden_MH: torch.Tensor,
    weight_VH: torch.Tensor,
    targets_M: torch.Tensor,
    segments: Sequence[HeadSegment],
    chunk_rows: int,
) -> HeadOutput:
    """Logprobs of `targets_M` and the loss gradients, sweeping the rows in chunks.

    A chunk may span several segments (one matmul with the base weight for all of them);
    each segment's LoRA term, loss and LoRA gradients apply to its part of the chunk.
    """
    rows = hidden_MH.shape[0]
    device = hidden_MH.device
    training = any(seg.loss is not None for seg in segments)
    out = HeadOutput(
        logprobs=torch.empty(rows, dtype=torch.float32, device=device),
        grad_hidden=torch.zeros_like(hidden_MH) if training else None,
        lora_grads=[None] * len(segments),
        finite=[True] * len(segments),
    )
    totals = [torch.zeros((), dtype=torch.float64, device=device) for _ in segments]
    for start in range(0, rows, chunk_rows):
        end = min(start + chunk_rows, rows)
        parts = [
            (i, max(seg.start, start) - start, min(seg.start + seg.count, end) - start)
            for i, seg in enumerate(segments)
            if seg.start < end and seg.start + seg.count > start
        ]
        _chunk(hidden_MH, weight_VH, targets_M, segments, start, end, parts, out, totals)
    if training:  # one device-to-host transfer for every segment
        out.finite = torch.isfinite(torch.stack(totals)).tolist()
    return out


def _chunk(
    hidden_MH: torch.Tensor,
    weight: torch.Tensor,
    targets_M: torch.Tensor,
    segments: Sequence[HeadSegment],
    start: int,
    end: int,
    parts: list[tuple[int, int, int]],  # (segment, first row, end row) within the chunk
    out: HeadOutput,
    totals: list[torch.Tensor],
) -> None:
    h, targets = hidden_MH[start:end], targets_M[start:end]
    logits = torch.mm(h, weight.t())
    xas: dict[int, torch.Tensor] = {}
    for i, a, b in parts:
        lora = segments[i].lora
        if lora is not None:
            xas[i] = torch.mm(h[a:b], lora[0].t())
            if lora[2] != 1.0:
                xas[i].mul_(lora[2])
            logits[a:b].addmm_(xas[i], lora[1])
    z = logits.float()
    target_z = z.gather(1, targets[:, None]).squeeze(1)
    peak = z.amax(dim=1)
    e = z.sub_(peak[:, None]).exp_()  # in place: exp(z - max), the logits are not needed again
    total = e.sum(dim=1)
    lp = target_z.sub_(peak).sub_(total.log())  # z[target] - logsumexp(z)
    out.logprobs[start:end] = lp
    training = [(i, a, b) for i, a, b in parts if segments[i].loss is not None]
    if not training or out.grad_hidden is None:
        return
    g = torch.zeros_like(lp)
    for i, a, b in training:
        seg = segments[i]
        assert seg.loss is not None
        with torch.enable_grad():
            leaf = lp[a:b].detach().requires_grad_()
            loss = seg.loss(leaf, start + a - seg.start, b - a).sum()
            (g[a:b],) = torch.autograd.grad(loss, leaf)
        totals[i] += loss.detach().double()
    dz = e.mul_((-g / total)[:, None])  # -g·softmax(z)
    dz.scatter_add_(1, targets[:, None], g[:, None])
    dz = dz.to(weight.dtype)
    grad_h = out.grad_hidden[start:end]
    torch.mm(dz, weight, out=grad_h)
    for i, a, b in training:
        lora = segments[i].lora
        if lora is None:
            continue
        # the products that read dz are laid out as [r, ·] = [r, ·]·[·, ·] so BLAS streams dz
        # once with a wide output (dzᵀ·xa or dz·B are several times slower for r ≪ V)
        grad_bt = torch.mm(xas[i].t(), dz[a:b])  # dBᵀ [r, V]
        gxa = torch.mm(lora[1], dz[a:b].t()).t()  # dz·B [n, r]
        if lora[2] != 1.0:
            gxa.mul_(lora[2])
        grad_a = torch.mm(gxa.t(), h[a:b])
        grad_h[a:b].addmm_(gxa, lora[0])
        previous = out.lora_grads[i]
        if previous is None:
            out.lora_grads[i] = (grad_a.float(), grad_bt.float())
        else:
            previous[0].add_(grad_a)
            previous[1].add_(grad_bt)
