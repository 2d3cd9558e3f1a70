"""The unembedding, the target logprobs and the loss gradient in one chunked sweep.

With a 49152-token vocabulary the unembedding dominates a small model's pass, and autograd would
hold three [tokens, vocab] float32 tensors (logits, log-softmax, their gradient): hundreds of MB
per wave, allocated and page-faulted anew on every pass. Every Treadle loss is a sum of per-token
functions of the target logprob lp, so dL/dlp of a token is known as soon as its lp is (gspo's
terms also read their datum's detached sequence ratio, which the engine computes before). Each
chunk of rows therefore computes, and then drops, its logits; a chunk may hold the rows of
several segments (one segment = one op = one adapter), each with its own LoRA term and loss:

    z   = h·Wᵀ + ((h·Aᵀ)·s)·Bᵀ                 (the LoRA term when the adapter trains lm_head)
    lp  = z[target] − logsumexp(z)             (float32; the sampler's target_logprobs formula)
    g   = dL/dlp                                (autograd of the op's loss on this chunk's lp)
    dz  = g·(onehot(target) − softmax(z))
    dh  = dz·W + ((dz·B)·s)·A      dB = dzᵀ·((h·Aᵀ)·s)      dA = s·(dz·B)ᵀ·h

Key decision: the head's backward happens during the forward sweep. It costs the same matmuls as
autograd (one forward, one input-gradient product) but works in one chunk of memory; the caller
backpropagates dh through the decoder. A segment whose loss is not finite is reported so that
the caller can drop its gradient.

On the CPU, a chunk that belongs to one adapter training lm_head runs its LoRA term inside the
base products (B = lora_B [V, r]): z = [h | xa]·[W | B]ᵀ and [dh | dz·B] = dz·[W | B], with
[W | B]ᵀ = [Wᵀ; Bᵀ] kept in a `StackedHead` whose Wᵀ rows are copied once and whose Bᵀ rows are
refreshed per use. The [tokens, vocab] logits and their gradient are then streamed twice instead
of four times, which is most of the cost of a small model's step. There the products that span
the vocabulary run on oneDNN (`_wide`), and the softmax is torch's fused kernel, in place.
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


class StackedHead:
    """[Wᵀ; Bᵀ] of the frozen unembedding W and one adapter's lm_head B at a time.

    Kept as [H + r, V] rows, which oneDNN reads faster than W's own [V, H] layout for both the
    logits and their input gradient (bench/trainer_head.py). The CPU engine keeps one, so Wᵀ is
    held twice (a second [H + 16, V] float32 copy) whether or not an adapter trains lm_head.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._source: tuple[int, torch.dtype, torch.device] | None = None

    def _rows(self, weight_VH: torch.Tensor, rank: int) -> torch.Tensor:
        vocab, hidden = weight_VH.shape
        source = (weight_VH.data_ptr(), weight_VH.dtype, weight_VH.device)
        buffer = self._buffer
        if buffer is None or self._source != source or buffer.shape[0] < hidden + rank:
            buffer = torch.empty(
                hidden + max(rank, 16), vocab, dtype=weight_VH.dtype, device=weight_VH.device
            )
            buffer[:hidden].copy_(weight_VH.t())
            self._buffer, self._source = buffer, source
        return buffer

    def base(self, weight_VH: torch.Tensor) -> torch.Tensor:
        """Wᵀ [H, V], contiguous."""
        return self._rows(weight_VH, 0)[: weight_VH.shape[1]]

    def get(self, weight_VH: torch.Tensor, bt_RV: torch.Tensor) -> torch.Tensor:
        """[Wᵀ; Bᵀ] [H + r, V], contiguous (Bᵀ = `bt_RV`, r = the adapter's rank)."""
        hidden, rank = weight_VH.shape[1], bt_RV.shape[0]
        stacked = self._rows(weight_VH, rank)[: hidden + rank]
        stacked[hidden:].copy_(bt_RV)
        return stacked


def _onednn_linear() -> Callable[..., torch.Tensor] | None:
    """oneDNN's dense float32 linear, x·weightᵀ (`torch.ops.mkldnn._linear_pointwise`), when this
    build has it, the CPU has AVX2 or AVX-512, and it agrees with torch.mm on the operand
    layouts the sweep passes (transposed views included); otherwise None."""
    if not torch.backends.mkldnn.is_available():
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    try:
        linear = torch.ops.mkldnn._linear_pointwise
        g = torch.Generator().manual_seed(0)
        x_MK, w_KN = torch.randn(5, 7, generator=g), torch.randn(7, 9, generator=g)
        for x, weight in ((x_MK, w_KN.t()), (x_MK[1:].t(), w_KN[:4].t().contiguous())):
            got = linear(x, weight, None, "none", [], "")
            if not torch.allclose(got, torch.mm(x, weight.t()), rtol=1e-5, atol=1e-5):
                return None
    except (AttributeError, RuntimeError, TypeError):
        return None
    return linear


_ONEDNN_LINEAR = _onednn_linear()


def _onednn(x: torch.Tensor) -> bool:
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and bool(torch.backends.mkldnn.enabled)  # torch types it ContextProp; it reads a bool
    )


def _wide(x_MK: torch.Tensor, weight_NK: torch.Tensor) -> torch.Tensor:
    """x·weightᵀ [M, N], for the head's products where one side spans the vocabulary.

    In float32 on an x86 CPU these go to oneDNN, which runs them faster than the BLAS behind
    torch.mm (bench/trainer_head.py; figures in docs/benchmarks.md), with results that match to
    float32 rounding. Elsewhere torch.mm.
    """
    if _onednn(x_MK):
        assert _ONEDNN_LINEAR is not None
        return _ONEDNN_LINEAR(x_MK, weight_NK, None, "none", [], "")
    return torch.mm(x_MK, weight_NK.t())


@torch.no_grad()
def unembed(
    hidden_MH: torch.Tensor,
    weight_VH: torch.Tensor,
    targets_M: torch.Tensor,
    segments: Sequence[HeadSegment],
    chunk_rows: int,
    stacked: StackedHead | None = None,
) -> HeadOutput:
    """Logprobs of `targets_M` and the loss gradients, sweeping the rows in chunks.

    A chunk may span several segments (one matmul with the base weight for all of them);
    each segment's LoRA term, loss and LoRA gradients apply to its part of the chunk. With
    `stacked`, a chunk of one lm_head-training adapter folds its LoRA term into the base products.
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
        _chunk(hidden_MH, weight_VH, targets_M, segments, start, end, parts, out, totals, stacked)
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
    stacked: StackedHead | None,
) -> None:
    h, targets = hidden_MH[start:end], targets_M[start:end]
    xas: dict[int, torch.Tensor] = {}
    for i, a, b in parts:
        lora = segments[i].lora
        if lora is not None:
            xas[i] = torch.mm(h[a:b], lora[0].t())
            if lora[2] != 1.0:
                xas[i].mul_(lora[2])
    folded_KV: torch.Tensor | None = None  # [Wᵀ; Bᵀ] of the chunk's one adapter
    whole = len(parts) == 1 and parts[0][1:] == (0, end - start)
    if stacked is not None and whole and parts[0][0] in xas:
        lora = segments[parts[0][0]].lora
        assert lora is not None
        folded_KV = stacked.get(weight, lora[1])
        logits = _wide(torch.cat([h, xas[parts[0][0]]], dim=1), folded_KV.t())
    base_HV = weight.t() if stacked is None else stacked.base(weight)
    if folded_KV is None:
        logits = _wide(h, base_HV.t())
        for i, a, b in parts:
            lora = segments[i].lora
            if lora is not None:
                logits[a:b].addmm_(xas[i], lora[1])
    z = logits.float()
    target_z = z.gather(1, targets[:, None]).squeeze(1)
    peak = z.amax(dim=1)
    p = torch.softmax(z, dim=1, out=z)  # in place: the logits are not needed again
    # the largest probability is exp(0) / Σexp(z - max), so logsumexp(z) = max - log(that)
    lp = target_z.sub_(peak).add_(p.amax(dim=1).log_())  # z[target] - logsumexp(z)
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
    dz = p.mul_(-g[:, None])  # -g·softmax(z)
    dz.scatter_add_(1, targets[:, None], g[:, None])
    dz = dz.to(weight.dtype)
    grad_h = out.grad_hidden[start:end]
    hidden = weight.shape[1]
    onednn = _onednn(dz)
    if folded_KV is not None:
        both = _wide(dz, folded_KV)  # [dz·W | dz·B]
        grad_h.copy_(both[:, :hidden])
    elif onednn:
        grad_h.copy_(_wide(dz, base_HV))  # dz·W
    else:
        torch.mm(dz, base_HV.t(), out=grad_h)
    for i, a, b in training:
        lora = segments[i].lora
        if lora is None:
            continue
        grad_bt = _wide(xas[i].t().contiguous(), dz[a:b].t())  # dBᵀ = xaᵀ·dz [r, V]
        if folded_KV is not None:
            gxa = both[:, hidden:].contiguous()  # dz·B [n, r], from the product above
        elif onednn:
            gxa = _wide(dz[a:b], lora[1])  # dz·B [n, r]
        else:  # BLAS streams dz once when the wide side is the output's: (Bᵀ·dzᵀ)ᵀ
            gxa = torch.mm(lora[1], dz[a:b].t()).t()
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
