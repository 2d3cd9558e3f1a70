"""The trainer's AdamW against torch.optim.AdamW, with decoupled weight decay and norm clipping,
on its own and through a real trainer: gradients accumulate until optim_step, grad_clip_norm
clips, weight_decay decays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from treadle import tensors
from treadle_trainer.optim import AdamConfig, AdamState

from .conftest import (
    create,
    datum,
    engine_grads,
    forward_backward,
    optim_step,
    reference_grads,
    reference_logprobs,
    reference_model,
    reference_weights,
    rel_err,
)


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


# the same rules through a real trainer

rng = np.random.default_rng(5)
D1 = [datum(rng.integers(0, 49152, n).tolist()) for n in (12, 7)]
D2 = [datum(rng.integers(0, 49152, n).tolist()) for n in (9,)]


def _reference_loss(ref: torch.nn.Module, data) -> torch.Tensor:
    total = 0
    for d in data:
        tokens = [*d.model_input.chunks[0].encoded_text.tokens]
        targets = tensors.decode(d.loss_fn_inputs["target_tokens"]).tolist()
        total = total - reference_logprobs(ref, [*tokens, targets[-1]]).sum()
    return total


def _weights(trainer, model_id: str) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.engine.adapters[model_id].params.items()}


def test_gradients_accumulate_across_forward_backward_calls_until_optim_step(trainer):
    trainer.client.run_ok([create("acc", rank=4, seed=3)])
    trainer.client.run_ok([forward_backward("acc", D1)])
    one = engine_grads(trainer.engine, "acc")
    trainer.client.run_ok([forward_backward("acc", D2)])
    ref = reference_model(4, 3)
    (_reference_loss(ref, D1) + _reference_loss(ref, D2)).backward()
    assert rel_err(engine_grads(trainer.engine, "acc"), reference_grads(ref)) <= 1e-5
    assert rel_err(one, reference_grads(ref)) > 0.1  # the second call added to the first
    adam = torch.optim.AdamW(
        [p for p in ref.parameters() if p.requires_grad], lr=1e-2, betas=(0.9, 0.95), eps=1e-2,
        weight_decay=0.0,
    )  # fmt: skip
    adam.step()
    adam.zero_grad()
    trainer.client.run_ok([optim_step("acc", learning_rate=1e-2, eps=1e-2)])
    assert rel_err(_weights(trainer, "acc"), reference_weights(ref)) <= 1e-5
    assert not engine_grads(trainer.engine, "acc")  # cleared by the step
    trainer.client.run_ok([forward_backward("acc", D1)])
    _reference_loss(ref, D1).backward()
    assert rel_err(engine_grads(trainer.engine, "acc"), reference_grads(ref)) <= 1e-5


def test_grad_clip_norm_clips_and_reports_the_norm_before_clipping(trainer):
    refs = {}
    for name, clip in (("clip", 0.05), ("noclip", 0.0)):
        trainer.client.run_ok([create(name, rank=4, seed=8)])
        trainer.client.run_ok([forward_backward(name, D1)])
        ref = reference_model(4, 8)
        _reference_loss(ref, D1).backward()
        params = [p for p in ref.parameters() if p.requires_grad]
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip or float("inf")))
        torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.95), eps=1e-2, weight_decay=0.0).step()
        results = trainer.client.run_ok(
            [optim_step(name, learning_rate=1e-2, eps=1e-2, grad_clip_norm=clip)]
        )
        assert results[f"{name}:optim"].optim_step.metrics["grad_norm:max"] == pytest.approx(
            norm, rel=1e-5
        )
        assert norm > 10 * 0.05  # so clipping at 0.05 changes the step
        assert rel_err(_weights(trainer, name), reference_weights(ref)) <= 1e-5
        refs[name] = _weights(trainer, name)
    assert rel_err(refs["clip"], refs["noclip"]) > 1e-4


def test_weight_decay_shrinks_weights_by_lr_times_decay(trainer):
    trainer.client.run_ok([create("decay", rank=4, seed=4)])
    before = _weights(trainer, "decay")
    trainer.client.run_ok([optim_step("decay", learning_rate=0.1, weight_decay=0.5)])
    after = _weights(trainer, "decay")
    assert all(torch.equal(after[k], w * (1 - 0.1 * 0.5)) for k, w in before.items())
    assert any(w.abs().sum() > 0 for w in before.values())
