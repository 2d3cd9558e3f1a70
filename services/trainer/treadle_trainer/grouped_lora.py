"""Grouped LoRA: one base matmul for the whole batch, each adapter's low-rank delta on its rows.

A batched pass sorts its rows by adapter, so every adapter owns one contiguous block of the
flattened [tokens, features] activations. Each adapted Linear then computes

    y = x·Wᵀ (+ b)                                  one matmul over all rows (frozen W)
    y[s:s+n] += ((x[s:s+n]·Aᵀ)·scale)·Bᵀ            per group, in place on the block

Key decision: the delta is an autograd Function with a hand-written backward. Adding in place on
narrow views keeps the forward to one BLAS call per group with no index_select/scatter (PEFT's
mixed batches spend about half their time there), and the backward passes the output gradient
through untouched (autograd's CopySlices would clone it once per group) and writes each group's
input gradient into its own block. On CUDA with two or more groups the same math runs as
`torch._grouped_mm` over rank-padded stacked weights, a fixed handful of kernels per module
whatever the number of tenants (used when a startup check finds it working and agreeing).
Adapter weights arrive as float32 master weights; both variants compute in the activations'
dtype and hand float32 gradients back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Group:
    """A contiguous block of flattened rows that runs through one adapter."""

    start: int  # first row of the block in the flattened [rows, features] activations
    count: int  # rows in the block
    scale: float  # alpha / rank
    weights: Mapping[
        str, tuple[torch.Tensor, torch.Tensor]
    ]  # module path -> (A [r, in], B [out, r])


@dataclass
class Routing:
    """The groups of the pass in flight, shared by every GroupedLoraLinear of one model."""

    groups: Sequence[Group] = field(default_factory=list)
    stacked: bool = False  # use torch._grouped_mm (CUDA) instead of one matmul per group
    offsets: torch.Tensor | None = None  # int32 end row of each group, on the device (stacked)

    def set(self, groups: Sequence[Group], stacked: bool, device: torch.device) -> None:
        """Route the next pass (one host-to-device copy of the offsets for every module)."""
        self.groups, self.stacked = groups, stacked
        self.offsets = None
        if stacked:
            ends = [g.start + g.count for g in groups]
            self.offsets = torch.tensor(ends, dtype=torch.int32).to(device)


class GroupedLoraLinear(nn.Module):
    """A frozen Linear plus the grouped LoRA deltas of the current pass (see module docstring)."""

    def __init__(self, base: nn.Linear, path: str, routing: Routing) -> None:
        super().__init__()
        self.base = base
        self.path = path
        self.routing = routing
        self.in_features = base.in_features
        self.out_features = base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (for code that inspects `module.weight`)."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = base(x) plus each group's delta on its block of rows."""
        x2 = x.reshape(-1, self.in_features)
        y2 = self.base(x2)
        groups = self.routing.groups
        if groups:
            meta = [
                (g.start, g.count, g.scale, g.weights.get(self.path, (None, None))) for g in groups
            ]
            if any(w[0] is not None for *_, w in meta):
                weights = [t for *_, w in meta for t in w if t is not None]
                spans = [(s, n, scale, w[0] is not None) for s, n, scale, w in meta]
                if self.routing.stacked:
                    offsets = self.routing.offsets
                    y2 = _StackedLoraDelta.apply(y2, x2, (spans, offsets), *weights)
                else:
                    y2 = _GroupedLoraDelta.apply(y2, x2, spans, *weights)
        return y2.view(*x.shape[:-1], self.out_features)


Span = tuple[int, int, float, bool]  # start, count, scale, has weights


def _in_dtype(weights: tuple[Any, ...], dtype: torch.dtype) -> list[torch.Tensor]:
    """The (float32 master) weights in the activations' dtype (the same tensors if it matches)."""
    return [w if w.dtype == dtype else w.to(dtype) for w in weights]


class _GroupedLoraDelta(torch.autograd.Function):
    """y[s:s+n] += (x[s:s+n]·Aᵀ·scale)·Bᵀ per group, in place; one matmul pair per group."""

    @staticmethod
    def forward(
        ctx: Any, y2: torch.Tensor, x2: torch.Tensor, spans: list[Span], *weights: Any
    ) -> torch.Tensor:
        active = [(s, n, scale) for s, n, scale, has in spans if has]
        cast = _in_dtype(weights, x2.dtype)
        xas = []
        for i, (s, n, scale) in enumerate(active):
            a, b = cast[2 * i], cast[2 * i + 1]
            xa = torch.mm(x2.narrow(0, s, n), a.t())
            if scale != 1.0:
                xa.mul_(scale)
            y2.narrow(0, s, n).addmm_(xa, b.t())
            xas.append(xa)
        ctx.mark_dirty(y2)
        ctx.active = active
        ctx.master_dtypes = [w.dtype for w in weights]
        ctx.save_for_backward(x2, *cast, *xas)
        return y2

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, *rest = ctx.saved_tensors
        active = ctx.active
        weights, xas = rest[: 2 * len(active)], rest[2 * len(active) :]
        grad_x = None
        if ctx.needs_input_grad[1]:
            covered = sum(n for _, n, _ in active) == x2.shape[0]
            grad_x = torch.empty_like(x2) if covered else torch.zeros_like(x2)
        grads: list[torch.Tensor] = []
        for i, (s, n, scale) in enumerate(active):
            a, b = weights[2 * i], weights[2 * i + 1]
            gy = grad_y.narrow(0, s, n)
            # products that read gy are laid out with the wide side as output (gyᵀ·xa and gy·B
            # as written take several times longer in BLAS when r is small)
            grad_b = torch.mm(xas[i].t(), gy).t()  # [out, r]
            gxa = torch.mm(b.t().contiguous(), gy.t()).t()  # [n, r]
            if scale != 1.0:
                gxa.mul_(scale)
            grad_a = torch.mm(gxa.t(), x2.narrow(0, s, n))  # [r, in]
            if grad_x is not None:
                torch.mm(gxa, a, out=grad_x.narrow(0, s, n))
            grads += [grad_a, grad_b]
        grads = [g.to(d) for g, d in zip(grads, ctx.master_dtypes, strict=True)]
        return (grad_y, grad_x, None, *grads)


class _StackedLoraDelta(torch.autograd.Function):
    """The same delta with grouped GEMMs over rank-padded weight stacks (CUDA, many groups).

    Every group takes part (a group without weights for this module gets zero matrices), so the
    grouped GEMM's offsets cover all rows. Padding ranks with zeros leaves the result unchanged
    and the padded rows/columns of the gradients zero, so they are simply cut off. The stacks
    are filled by multi-tensor copies (which also cast to the activations' dtype), so building
    them costs a few kernels per module whatever the number of groups.
    """

    @staticmethod
    def forward(
        ctx: Any,
        y2: torch.Tensor,
        x2: torch.Tensor,
        layout: tuple[list[Span], torch.Tensor | None],
        *weights: Any,
    ) -> torch.Tensor:
        spans, offs = layout
        if offs is None:
            ends = [s + n for s, n, _, _ in spans]
            offs = torch.tensor(ends, dtype=torch.int32).to(x2.device)
        it = iter(weights)
        pairs = [(next(it), next(it)) if has else None for *_, has in spans]
        ranks = [0 if p is None else p[0].shape[0] for p in pairs]
        rank = -(-max(ranks) // 8) * 8  # grouped GEMM wants 16-byte aligned strides
        G, d_in, d_out = len(spans), x2.shape[1], y2.shape[1]
        a_stack = x2.new_zeros((G, rank, d_in))
        b_stack = x2.new_zeros((G, d_out, rank))
        live = [g for g, p in enumerate(pairs) if p is not None]
        a_views = [a_stack[g, : ranks[g]] for g in live]
        torch._foreach_copy_(a_views, [pairs[g][0] for g in live])  # type: ignore[index]
        torch._foreach_copy_([b_stack[g, :, : ranks[g]] for g in live],
                             [pairs[g][1] for g in live])  # type: ignore[index]  # fmt: skip
        scaled = [g for g in live if spans[g][2] != 1.0]
        if scaled:
            torch._foreach_mul_([a_stack[g] for g in scaled], [spans[g][2] for g in scaled])
        xa = torch._grouped_mm(x2, a_stack.transpose(1, 2), offs=offs)  # [M, rank]
        y2.add_(torch._grouped_mm(xa, b_stack.transpose(1, 2), offs=offs))
        ctx.mark_dirty(y2)
        ctx.spans, ctx.ranks = spans, ranks
        ctx.master_dtypes = [w.dtype for w in weights]
        ctx.save_for_backward(x2, a_stack, b_stack, xa, offs)
        return y2

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, a_stack, b_stack, xa, offs = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        gxa = torch._grouped_mm(grad_y, _column_major(b_stack), offs=offs)  # scale is in A
        grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = torch._grouped_mm(gxa, _column_major(a_stack), offs=offs)
        grad_b = torch._grouped_mm(grad_y.t(), xa, offs=offs)  # [G, out, rank]
        grad_a = torch._grouped_mm(gxa.t(), x2, offs=offs)  # [G, rank, in], times scale
        grads: list[torch.Tensor] = []
        for g, ((_, _, scale, has), r) in enumerate(zip(ctx.spans, ctx.ranks, strict=True)):
            if has:
                grads += [grad_a[g, :r] * scale, grad_b[g, :, :r]]
        grads = [g.to(d) for g, d in zip(grads, ctx.master_dtypes, strict=True)]
        return (grad_y, grad_x, None, *grads)


def _column_major(stack: torch.Tensor) -> torch.Tensor:
    """The same [G, K, N] values with column-major matrices (what grouped GEMM kernels take)."""
    return stack.transpose(1, 2).contiguous().transpose(1, 2)


def stacked_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the stacked (grouped GEMM) delta runs here and agrees with the per-group one.

    Checked once on small tensors at startup, forward and backward, so a torch build or GPU
    without a usable `torch._grouped_mm` falls back to one matmul pair per group.
    """
    if not hasattr(torch, "_grouped_mm"):
        return False
    g = torch.Generator(device="cpu").manual_seed(0)

    def make(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) / 4).to(device=device, dtype=dtype)

    spans: list[Span] = [(0, 16, 0.5, True), (16, 8, 1.0, False), (24, 40, 2.0, True)]
    weights = [make(8, 64).float(), make(96, 8).float(), make(16, 64).float(), make(96, 16).float()]
    x, y, upstream = make(64, 64), make(64, 96), make(64, 96)
    outputs = []
    for fn in (_GroupedLoraDelta, _StackedLoraDelta):
        leaves = [w.clone().requires_grad_() for w in weights]
        x_leaf = x.clone().requires_grad_()
        try:
            layout = spans if fn is _GroupedLoraDelta else (spans, None)
            out = fn.apply(y.clone(), x_leaf, layout, *leaves)
            (out.float() * upstream.float()).sum().backward()
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            return False
        outputs.append([out.detach(), x_leaf.grad, *(w.grad for w in leaves)])
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    for ours, theirs in zip(outputs[1], outputs[0], strict=True):
        if ours is None or theirs is None:
            return False
        error = (ours.float() - theirs.float()).norm() / theirs.float().norm().clamp_min(1e-12)
        if not bool(error <= tolerance):
            return False
    return True
