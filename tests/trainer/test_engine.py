"""The engine without gRPC: a wave larger than max_pass_tokens is split into several passes
that give the same results as one, and released adapters free their slot for new ones."""

from __future__ import annotations

import numpy as np
import torch

from treadle.v1 import common_pb2
from treadle_models.lora import LoraSpec
from treadle_trainer.engine import ForwardResult, TrainerEngine
from treadle_trainer.inputs import parse_forward_backward

from .conftest import TINY, datum, rel_err

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


def test_released_adapters_make_room_and_names_are_not_reused():
    engine = TrainerEngine(TINY, device="cpu")
    first = engine.create_adapter("a", "t", LoraSpec(rank=4, alpha=4.0), seed=1)
    engine.release_adapter("a")
    again = engine.create_adapter("a", "t", LoraSpec(rank=4, alpha=4.0), seed=1)
    assert again.name != first.name and list(engine.adapters) == ["a"]
    assert all(torch.equal(again.params[k], p) for k, p in first.params.items())
    assert all(p.requires_grad for p in again.params.values())
    assert engine.bank.model is not None
    assert list(engine.bank.model.peft_config) == [again.name]
