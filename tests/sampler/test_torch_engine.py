"""The torch engine on tiny-llama: cross-request batching, adapter isolation, cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
import torch
from prometheus_client import REGISTRY
from safetensors.torch import load, save

from sampler.conftest import Adapter, make_adapter, reference_logprobs, run
from treadle_models import LoraSpec
from treadle_sampler.engine import Completion, SamplingOptions
from treadle_sampler.torch_engine import TorchEngine


async def collect(
    engine: TorchEngine, adapter: str | None, prompt: list[int], n: int, options: SamplingOptions
) -> list[Completion]:
    """Every completion of one request, in index order."""
    results = [item async for item in engine.sample(adapter, prompt, n, options)]
    return [completion for _, completion in sorted(results, key=lambda item: item[0])]


def decode_steps() -> float:
    return REGISTRY.get_sample_value("treadle_sampler_batch_size_count") or 0.0


def test_concurrent_requests_share_decode_steps_and_match_solo_runs(
    engine: TorchEngine, adapter_a: Adapter, adapter_b: Adapter
) -> None:
    requests = [
        ("a", list(range(100, 131)), 3, SamplingOptions(max_tokens=12, seed=5)),
        ("b", [7, 8, 9], 2, SamplingOptions(max_tokens=12, seed=9, top_k=50)),
        (None, list(range(300, 310)), 1, SamplingOptions(max_tokens=12, temperature=0)),
        ("a", [42] * 17, 2, SamplingOptions(max_tokens=12, seed=1, temperature=0.7, top_p=0.9)),
    ]

    async def scenario() -> tuple[list[list[Completion]], list[list[Completion]], float]:
        await engine.load_adapter("a", adapter_a.files)
        await engine.load_adapter("b", adapter_b.files)
        try:
            before = decode_steps()
            together = await asyncio.gather(*(collect(engine, *r) for r in requests))
            steps = decode_steps() - before
            alone = [await collect(engine, *r) for r in requests]
        finally:
            await engine.evict("a")
            await engine.evict("b")
        return together, alone, steps

    together, alone, steps = run(scenario())
    assert steps < 11 * len(requests) / 2  # solo runs would need 11 steps each
    for batched, solo in zip(together, alone, strict=True):
        for x, y in zip(batched, solo, strict=True):
            assert x.tokens == y.tokens
            assert x.stop_reason == y.stop_reason == "length"
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)
    references = {"a": adapter_a.model, "b": adapter_b.model}
    for (name, prompt, _, options), completions in zip(requests, together, strict=True):
        if name is None or options.temperature != 1.0:
            continue
        for completion in completions:
            expected = reference_logprobs(references[name], prompt, completion.tokens)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_adapter_files_cannot_change_the_shared_base_model(
    engine: TorchEngine, base_model: torch.nn.Module
) -> None:
    adapter = make_adapter(3, LoraSpec(rank=4))
    # peft's save_embedding_layers puts the tied base embedding into the file; make it wrong
    with TemporaryDirectory() as folder:
        adapter.model.save_pretrained(folder, save_embedding_layers=True)
        tensors = load((Path(folder) / "adapter_model.safetensors").read_bytes())
    assert any("base_layer" in key for key in tensors)
    tensors = {k: v + 1.0 if "base_layer" in k else v for k, v in tensors.items()}
    files = {**adapter.files, "adapter_model.safetensors": save(tensors)}
    prompt = list(range(10, 30))

    async def scenario() -> tuple[list[float], list[float]]:
        await engine.load_adapter("tampered", files)
        try:
            base = await engine.compute_logprobs(None, prompt)
            adapted = await engine.compute_logprobs("tampered", prompt)
        finally:
            await engine.evict("tampered")
        return base, adapted

    base, adapted = run(scenario())
    expected_base = reference_logprobs(base_model, prompt[:1], prompt[1:])
    expected_adapted = reference_logprobs(adapter.model, prompt[:1], prompt[1:])
    assert torch.allclose(torch.tensor(base), expected_base, atol=1e-5)
    assert torch.allclose(torch.tensor(adapted), expected_adapted, atol=1e-5)


def test_evicting_one_adapter_leaves_the_others(
    engine: TorchEngine, adapter_a: Adapter, adapter_b: Adapter
) -> None:
    prompt = list(range(50, 70))

    async def scenario() -> list[float]:
        await engine.load_adapter("first", adapter_a.files)
        await engine.load_adapter("second", adapter_b.files)
        await engine.evict("first")
        try:
            with pytest.raises(KeyError):
                await engine.compute_logprobs("first", prompt)
            return await engine.compute_logprobs("second", prompt)
        finally:
            await engine.evict("second")

    logprobs = run(scenario())
    expected = reference_logprobs(adapter_b.model, prompt[:1], prompt[1:])
    assert torch.allclose(torch.tensor(logprobs), expected, atol=1e-5)


def test_a_request_whose_caller_goes_away_stops_generating(engine: TorchEngine) -> None:
    async def scenario() -> float | None:
        long = asyncio.ensure_future(
            collect(engine, None, [1, 2, 3], 4, SamplingOptions(max_tokens=1500, seed=0))
        )
        await asyncio.sleep(0.3)
        long.cancel()
        short = await collect(engine, None, [4, 5], 1, SamplingOptions(max_tokens=3, seed=0))
        assert len(short[0].tokens) == 3
        return REGISTRY.get_sample_value("treadle_sampler_running_sequences")

    assert run(scenario()) == 0


def test_bad_adapter_files_are_refused_and_the_engine_keeps_serving(
    engine: TorchEngine, adapter_a: Adapter
) -> None:
    async def scenario() -> list[float]:
        with pytest.raises(ValueError, match=r"adapter_config\.json"):
            await engine.load_adapter("x", {"adapter_model.safetensors": b"123"})
        with pytest.raises(ValueError, match="not a PEFT adapter"):
            await engine.load_adapter("x", {**adapter_a.files, "adapter_model.safetensors": b"1"})
        return await engine.compute_logprobs(None, [1, 2, 3])

    assert len(run(scenario())) == 2
