"""The engine without gRPC: a wave larger than max_pass_tokens is split into several passes
that give the same results as one, released adapters are gone, the Qwen2 and Qwen3 families
train like plain PEFT, and a bfloat16 base (the GPU setting) trains float32 adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from treadle.v1 import common_pb2
from treadle_models.lora import LoraSpec
from treadle_trainer.engine import ForwardResult, TrainerEngine
from treadle_trainer.inputs import parse_forward_backward
from treadle_trainer.optim import AdamConfig

from .conftest import TINY, datum, reference_grads, reference_logprobs, reference_model, rel_err

rng = np.random.default_rng(3)
SEQS = [rng.integers(0, 49152, n).tolist() for n in (9, 17, 4, 12)]


def _batch(loss_fn: str = "cross_entropy", **inputs: object):
    request = common_pb2.ForwardBackwardRequest(
        data=[datum(s, **{k: v[i] for k, v in inputs.items()}) for i, s in enumerate(SEQS)],
        loss_fn=loss_fn,
    )
    return parse_forward_backward(request, 49152, 2048)


def _run(max_pass_tokens: int):
    engine = TrainerEngine(TINY, device="cpu", max_pass_tokens=max_pass_tokens)
    engine.create_adapter("x", "t", LoraSpec(rank=4, alpha=8.0), seed=1)
    engine.create_adapter("y", "t", LoraSpec(rank=2, alpha=2.0, train_mlp=False), seed=2)
    draws = np.random.default_rng(4)
    adv = [draws.normal(size=len(s) - 1).astype(np.float32) for s in SEQS]
    q = [np.full(len(s) - 1, -11.0, np.float32) for s in SEQS]
    results = engine.forward_backward(
        [("x", _batch()), ("y", _batch("importance_sampling", logprobs=q, advantages=adv))]
    )
    grads = {m: {k: p.grad for k, p in engine.adapters[m].params.items()} for m in ("x", "y")}
    return results, grads


def test_a_wave_split_into_several_passes_equals_one_pass():
    one, one_grads = _run(max_pass_tokens=1 << 20)
    split, split_grads = _run(max_pass_tokens=20)
    for a, b in zip(one, split, strict=True):
        assert isinstance(a, ForwardResult) and isinstance(b, ForwardResult)
        assert a.tokens == b.tokens == sum(len(s) - 1 for s in SEQS)
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    for model_id in ("x", "y"):
        assert rel_err(split_grads[model_id], one_grads[model_id]) <= 1e-5


def test_a_released_adapter_is_gone_and_its_seed_gives_it_back():
    engine = TrainerEngine(TINY, device="cpu")
    first = engine.create_adapter("a", "t", LoraSpec(rank=4, alpha=4.0), seed=1)
    weights = {k: p.detach().clone() for k, p in first.params.items()}
    engine.release_adapter("a")
    assert not engine.adapters and not engine.residency.resident
    again = engine.create_adapter("a", "t", LoraSpec(rank=4, alpha=4.0), seed=1)
    assert again is not first and list(engine.adapters) == ["a"]
    assert all(torch.equal(again.params[k], w) for k, w in weights.items())
    assert all(p.requires_grad for p in again.params.values())


@pytest.mark.parametrize("model", ["treadle/tiny-qwen2", "treadle/tiny-qwen3"])
def test_qwen_families_match_plain_peft_per_adapter(model):
    engine = TrainerEngine(model, device="cpu")
    specs = {"x": LoraSpec(rank=4, alpha=8.0), "y": LoraSpec(rank=8, train_attn=False)}
    for seed, (model_id, spec) in enumerate(specs.items()):
        engine.create_adapter(model_id, "t", spec, seed=seed)
    results = engine.forward_backward([("x", _batch()), ("y", _batch())])
    for seed, (model_id, spec) in enumerate(specs.items()):
        ref = reference_model(spec.rank, seed, model, alpha=spec.effective_alpha,
                              train_attn=spec.train_attn)  # fmt: skip
        lps = [reference_logprobs(ref, s) for s in SEQS]
        (-sum(lp.sum() for lp in lps)).backward()
        result = results[seed]
        assert isinstance(result, ForwardResult)
        for got, want in zip(result.logprobs, lps, strict=True):
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)
        got_grads = {k: p.grad for k, p in engine.adapters[model_id].params.items()}
        assert rel_err(got_grads, reference_grads(ref)) <= 1e-5


def test_a_bfloat16_base_trains_float32_adapters_close_to_float32():
    results, grads = {}, {}
    for dtype in ("float32", "bfloat16"):
        engine = TrainerEngine(TINY, device="cpu", dtype=dtype)
        adapter = engine.create_adapter("x", "t", LoraSpec(rank=4), seed=1)
        engine.forward_backward([("x", _batch())])
        engine.optim_step("x", AdamConfig(learning_rate=1e-2))
        (results[dtype],) = engine.forward_backward([("x", _batch())])
        grads[dtype] = {k: p.grad for k, p in adapter.params.items()}
        assert all(p.dtype == torch.float32 for p in adapter.params.values())
    for got, want in zip(results["bfloat16"].logprobs, results["float32"].logprobs, strict=True):
        np.testing.assert_allclose(got, want, atol=0.15)
    assert rel_err(grads["bfloat16"], grads["float32"]) < 0.1
