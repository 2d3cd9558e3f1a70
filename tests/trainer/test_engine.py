"""The engine without gRPC: a wave larger than max_pass_tokens is split into several passes
that give the same results as one, gspo's per-datum sequence ratio survives the head's chunks,
released adapters are gone, the Qwen2 and Qwen3 families train like plain PEFT, and a bfloat16
base (the GPU setting) trains float32 adapters."""

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


def _batch(loss_fn: str = "cross_entropy", config: dict[str, float] | None = None, **inputs):
    """A batch over SEQS; datum i carries inputs[name][i] unless that is None."""
    data = [
        datum(s, **{k: v[i] for k, v in inputs.items() if v[i] is not None})
        for i, s in enumerate(SEQS)
    ]
    request = common_pb2.ForwardBackwardRequest(data=data, loss_fn=loss_fn, loss_fn_config=config)
    return parse_forward_backward(request, 49152, 2048)


def _run(max_pass_tokens: int):
    engine = TrainerEngine(TINY, device="cpu", max_pass_tokens=max_pass_tokens)
    engine.create_adapter("x", "t", LoraSpec(rank=4, alpha=8.0), seed=1)
    engine.create_adapter("y", "t", LoraSpec(rank=2, alpha=2.0, train_mlp=False), seed=2)
    engine.create_adapter("z", "u", LoraSpec(rank=4), seed=3)
    draws = np.random.default_rng(4)
    adv = [draws.normal(size=len(s) - 1).astype(np.float32) for s in SEQS]
    q = [np.full(len(s) - 1, -11.0, np.float32) for s in SEQS]
    wide = {"clip_low_threshold": 0.5, "clip_high_threshold": 2.0}
    results = engine.forward_backward(
        [
            ("x", _batch()),
            ("y", _batch("importance_sampling", logprobs=q, advantages=adv)),
            ("z", _batch("gspo", wide, logprobs=q, advantages=adv)),
        ]
    )
    grads = {m: {k: p.grad for k, p in engine.adapters[m].params.items()} for m in "xyz"}
    return results, grads


def test_a_wave_split_into_several_passes_equals_one_pass():
    one, one_grads = _run(max_pass_tokens=1 << 20)
    split, split_grads = _run(max_pass_tokens=20)
    for a, b in zip(one, split, strict=True):
        assert isinstance(a, ForwardResult) and isinstance(b, ForwardResult)
        assert a.tokens == b.tokens == sum(len(s) - 1 for s in SEQS)
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    for model_id in "xyz":
        assert rel_err(split_grads[model_id], one_grads[model_id]) <= 1e-5


def _gspo_by_autograd(ref, q, adv, masks, low, high, lo: float, hi: float) -> float:
    """Tinker's gspo code, whole sequence by whole sequence, on `ref` (float64), then backward;
    per datum, `masks`/`low`/`high` are its sequence_ratio_mask / thresholds or None."""
    total = torch.zeros((), dtype=torch.float64)
    for i, seq in enumerate(SEQS):
        lp = reference_logprobs(ref, seq)
        ref_lp, a = torch.as_tensor(q[i]).double(), torch.as_tensor(adv[i]).double()
        in_ratio = a != 0 if masks[i] is None else torch.as_tensor(masks[i]) != 0
        log_ratio = (lp.detach() - ref_lp)[in_ratio].mean()
        ratio = torch.exp(log_ratio + lp - lp.detach())
        lo_t = lo if low[i] is None else torch.as_tensor(low[i]).double()
        hi_t = hi if high[i] is None else torch.as_tensor(high[i]).double()
        clipped = torch.clamp(ratio, lo_t, hi_t)
        total = total - torch.minimum(ratio * a, clipped * a).sum()
    total.backward()
    return float(total.detach())


def test_gspo_takes_each_datums_own_sequence_ratio_though_the_head_cuts_datums_into_chunks():
    """Three tenants in one wave, two on gspo, their rows swept in chunks of 5 tokens, so that
    datums are cut across chunks and chunks hold parts of several datums and ops: each gspo
    adapter's gradient and loss:sum are those of Tinker's formula over whole sequences."""
    chunk = 5
    engine = TrainerEngine(TINY, device="cpu", head_chunk_rows=chunk)
    specs = {
        "x": LoraSpec(rank=4, alpha=8.0),
        "ce": LoraSpec(rank=4),
        "y": LoraSpec(rank=2, alpha=2.0, train_mlp=False),
    }
    for seed, (model_id, spec) in enumerate(specs.items()):
        engine.create_adapter(model_id, f"tenant-{model_id}", spec, seed=seed)
    (probe,) = engine.forward_backward([("x", _batch())])
    assert isinstance(probe, ForwardResult)
    for params in (engine.adapters[m].params for m in specs):
        for p in params.values():
            p.grad = None
    draws = np.random.default_rng(5)
    # datum-wide log-ratios −0.3, 0, 0.25, 0.08 (s ≈ 0.74, 1, 1.28, 1.08) plus per-token noise
    shifts = [-0.3, 0.0, 0.25, 0.08]
    q = [
        (lp - shift - draws.uniform(-0.4, 0.4, len(lp))).astype(np.float32)
        for lp, shift in zip(probe.logprobs, shifts, strict=True)
    ]
    adv = [draws.normal(size=len(lp)).astype(np.float32) for lp in probe.logprobs]
    for a in adv:
        a[:2] = 0.0
    # y: datums 1 and 3 name their own M, datum 2 carries per-token thresholds
    masks = [None, (np.arange(16) % 3 == 0).astype(np.float32), None, np.ones(11, np.float32)]
    low = [None, None, np.full(3, 0.5, np.float32), None]
    high = [None, None, np.array([1.5, 1.1, 1.5], np.float32), None]
    x_config = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
    y_config = {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}
    results = engine.forward_backward(
        [
            ("x", _batch("gspo", x_config, logprobs=q, advantages=adv)),
            ("ce", _batch()),
            ("y", _batch("gspo", y_config, logprobs=q, advantages=adv, sequence_ratio_mask=masks,
                         clip_low_threshold=low, clip_high_threshold=high)),
        ]
    )  # fmt: skip
    lengths = [len(s) - 1 for s in SEQS]
    starts = np.cumsum([0] + lengths * 3)[:-1]
    cut = [s // chunk != (s + n - 1) // chunk for s, n in zip(starts, lengths * 3, strict=True)]
    assert sum(cut) >= 6  # the case does cut datums

    nothing = [None] * len(SEQS)
    cases = {
        "x": (x_config, nothing, nothing, nothing),
        "y": (y_config, masks, low, high),
    }
    for op, (model_id, spec) in enumerate(specs.items()):
        seed = op
        ref = reference_model(spec.rank, seed, alpha=spec.effective_alpha,
                              train_mlp=spec.train_mlp)  # fmt: skip
        result = results[op]
        assert isinstance(result, ForwardResult)
        if model_id == "ce":
            want = float(-sum(reference_logprobs(ref, s).sum() for s in SEQS))
            (-sum(reference_logprobs(ref, s).sum() for s in SEQS)).backward()
        else:
            config, m, lo_in, hi_in = cases[model_id]
            lo, hi = config["clip_low_threshold"], config["clip_high_threshold"]
            want = _gspo_by_autograd(ref, q, adv, m, lo_in, hi_in, lo, hi)
        got_grads = {k: p.grad for k, p in engine.adapters[model_id].params.items()}
        assert rel_err(got_grads, reference_grads(ref)) <= 1e-5, model_id
        assert result.metrics["loss:sum"] == pytest.approx(want, rel=1e-5), model_id


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
