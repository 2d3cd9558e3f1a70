"""Grouped LoRA gives each block of rows exactly its own adapter's output and gradients, with one
matmul per group (CPU) or grouped GEMMs over stacked weights (the CUDA layout, checked here on
the CPU), including blocks whose adapter does not adapt the module."""

from __future__ import annotations

import pytest
import torch

from treadle_trainer.grouped_lora import Group, GroupedLoraLinear, Routing, stacked_supported

D_IN, D_OUT = 24, 40
BLOCKS = [(0, 30, 4, 0.5), (30, 10, None, 1.0), (40, 50, 8, 2.0), (90, 6, 1, 1.0)]  # rows, rank


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(D_IN, D_OUT)
    with torch.no_grad():
        base.weight.copy_(torch.randn(D_OUT, D_IN, generator=g))
        base.bias.copy_(torch.randn(D_OUT, generator=g))
    base.requires_grad_(False)
    weights = [
        None
        if r is None
        else (
            torch.randn(r, D_IN, generator=g).requires_grad_(),
            torch.randn(D_OUT, r, generator=g).requires_grad_(),
        )
        for *_, r, _ in BLOCKS
    ]
    x = torch.randn(96, D_IN, generator=g).requires_grad_()
    upstream = torch.randn(96, D_OUT, generator=g)
    return base, weights, x, upstream


def _reference(base, weights, x, upstream):
    parts = []
    for (start, count, _, scale), w in zip(BLOCKS, weights, strict=True):
        xs = x[start : start + count]
        y = base(xs)
        if w is not None:
            y = y + (xs @ w[0].t() @ w[1].t()) * scale
        parts.append(y)
    y = torch.cat(parts)
    (y * upstream).sum().backward()
    return y.detach()


def _grouped(base, weights, x, upstream, stacked: bool):
    routing = Routing()
    module = GroupedLoraLinear(base, "layer", routing)
    groups = [
        Group(start, count, scale, {} if w is None else {"layer": w})
        for (start, count, _, scale), w in zip(BLOCKS, weights, strict=True)
    ]
    routing.set(groups, stacked, torch.device("cpu"))
    y = module(x.view(4, 24, D_IN)).reshape(96, D_OUT)
    (y * upstream).sum().backward()
    return y.detach()


def _grads(weights, x):
    return [x.grad] + [t.grad for w in weights if w is not None for t in w]


@pytest.mark.parametrize("stacked", [False, True], ids=["per-group", "stacked"])
def test_each_block_gets_its_own_adapters_output_and_gradients(stacked):
    ref = _case(0)
    want = _reference(*ref)
    ours = _case(0)
    got = _grouped(*ours, stacked=stacked)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(_grads(ours[1], ours[2]), _grads(ref[1], ref[2]), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4)


def test_without_groups_the_module_is_its_base_linear_and_detached_weights_get_no_gradient():
    base, weights, x, _ = _case(1)
    routing = Routing()
    module = GroupedLoraLinear(base, "layer", routing)
    assert torch.equal(module(x), base(x))
    a, b = weights[0]
    routing.groups = [Group(0, 96, 1.0, {"layer": (a.detach(), b.detach())})]
    module(x).sum().backward()
    assert a.grad is None and b.grad is None and x.grad is not None


def test_the_startup_check_accepts_grouped_gemm_where_it_agrees():
    assert stacked_supported(torch.device("cpu"), torch.float32)
