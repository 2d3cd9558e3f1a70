"""The trainer's AdamW against torch.optim.AdamW, with decoupled weight decay and norm clipping."""

from __future__ import annotations

import pytest
import torch

from treadle_trainer.optim import AdamConfig, AdamState


def _params(seed: int) -> dict[str, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.nn.Parameter(torch.randn(4, 8, generator=g)),
        "b": torch.nn.Parameter(torch.randn(8, 3, generator=g)),
    }


@pytest.mark.parametrize(
    "config",
    [
        AdamConfig(learning_rate=1e-2),
        AdamConfig(learning_rate=3e-3, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=0.1),
        AdamConfig(learning_rate=1e-2, grad_clip_norm=0.5),
    ],
)
def test_matches_torch_adamw_over_several_steps(config):
    ours, theirs = _params(0), _params(0)
    state = AdamState(ours)
    reference = torch.optim.AdamW(
        theirs.values(),
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        weight_decay=config.weight_decay,
        foreach=False,
    )
    g = torch.Generator().manual_seed(1)
    for step in range(1, 6):
        for key in ours:
            grad = torch.randn(ours[key].shape, generator=g) * 3
            ours[key].grad, theirs[key].grad = grad.clone(), grad.clone()
        norm = state.apply(ours, config)
        want_norm = torch.nn.utils.clip_grad_norm_(
            theirs.values(), config.grad_clip_norm or float("inf")
        )
        reference.step()
        assert norm == pytest.approx(float(want_norm), rel=1e-6)
        assert state.step == step
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=1e-7)


def test_a_parameter_without_gradient_still_decays_its_momentum():
    params = _params(0)
    state = AdamState(params)
    params["a"].grad = torch.ones_like(params["a"])
    params["b"].grad = torch.ones_like(params["b"])
    state.apply(params, AdamConfig())
    params["a"].grad = params["b"].grad = None
    before = params["a"].detach().clone()
    assert state.apply(params, AdamConfig()) == 0.0
    assert not torch.equal(params["a"].detach(), before)  # momentum keeps moving it


def test_moments_export_and_load_exactly():
    params = _params(0)
    state = AdamState(params)
    for p in params.values():
        p.grad = torch.randn_like(p)
    state.apply(params, AdamConfig())
    copy = AdamState(params)
    copy.load({k: t.clone() for k, t in state.tensors().items()}, state.step)
    assert copy.step == 1
    assert all(torch.equal(copy.tensors()[k], t) for k, t in state.tensors().items())
    with pytest.raises(ValueError, match="does not fit"):
        copy.load({"a.exp_avg": torch.zeros(4, 8)}, 1)
