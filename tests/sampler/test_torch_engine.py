"""The torch engine on tiny-llama: cross-request batching over many adapters, adapter isolation,
clean eviction, cancellation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
import torch
from prometheus_client import REGISTRY
from safetensors.torch import load, save

from sampler.conftest import Adapter, make_adapter, reference_logprobs, run
from treadle_models import LoraSpec
from treadle_sampler.engine import Completion, SamplingOptions
from treadle_sampler.local_adapters import write_peft_folder
from treadle_sampler.torch_engine import TorchEngine


async def collect(
    engine: TorchEngine, adapter: str | None, prompt: list[int], n: int, options: SamplingOptions
) -> list[Completion]:
    """Every completion of one request, in index order."""
    results = [item async for item in engine.sample(adapter, prompt, n, options)]
    return [completion for _, completion in sorted(results, key=lambda item: item[0])]


def decode_steps() -> float:
    return REGISTRY.get_sample_value("treadle_sampler_batch_size_count") or 0.0


@pytest.fixture
def engine(torch_engine: TorchEngine) -> TorchEngine:
    """This module tests the torch engine."""
    return torch_engine


def test_eight_concurrent_requests_on_four_adapters_share_steps_and_match_solo_runs(
    engine: TorchEngine, four: dict[str, Adapter]
) -> None:
    requests = [
        ("a", list(range(100, 131)), 3, SamplingOptions(max_tokens=12, seed=5)),
        ("b", [7, 8, 9], 2, SamplingOptions(max_tokens=12, seed=9, top_k=50)),
        ("c", list(range(300, 310)), 1, SamplingOptions(max_tokens=12, temperature=0)),
        ("d", [42] * 17, 2, SamplingOptions(max_tokens=12, seed=1, temperature=0.7, top_p=0.9)),
        ("a", [5, 6], 1, SamplingOptions(max_tokens=12, seed=2)),
        ("c", list(range(900, 940)), 2, SamplingOptions(max_tokens=12, seed=3)),
        ("d", [11, 12, 13, 14], 1, SamplingOptions(max_tokens=12, seed=4)),
        (None, list(range(20, 28)), 2, SamplingOptions(max_tokens=12, seed=6)),
    ]

    async def scenario() -> tuple[list[list[Completion]], list[list[Completion]], float]:
        for key, adapter in four.items():
            await engine.load_adapter(key, adapter.folder)
        try:
            before = decode_steps()
            together = await asyncio.gather(*(collect(engine, *r) for r in requests))
            steps = decode_steps() - before
            alone = [await collect(engine, *r) for r in requests]
        finally:
            for key in four:
                await engine.evict(key)
        return together, alone, steps

    together, alone, steps = run(scenario())
    assert steps < 11 * len(requests) / 2  # solo runs would need 11 steps each
    for batched, solo in zip(together, alone, strict=True):
        for x, y in zip(batched, solo, strict=True):
            assert x.tokens == y.tokens
            assert x.stop_reason == y.stop_reason == "length"
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)
    for (key, prompt, _, options), completions in zip(requests, together, strict=True):
        if key is None or options.temperature != 1.0 or options.top_k or options.top_p < 1:
            continue  # the model's own distribution only without tempering or truncation
        for completion in completions:
            expected = reference_logprobs(four[key].model, prompt, completion.tokens)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_num_samples_share_one_prefill_of_the_prompt(engine: TorchEngine) -> None:
    shapes: list[tuple[int, ...]] = []
    embed = engine.model.get_input_embeddings()
    hook = embed.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    try:
        prompt = list(range(400, 420))
        options = SamplingOptions(max_tokens=5, seed=3, stop_token_ids=())
        completions = run(collect(engine, None, prompt, 4, options))
    finally:
        hook.remove()
    assert len(completions) == 4 and len({tuple(c.tokens) for c in completions}) == 4
    assert shapes[0] == (1, 20)  # the prompt once, not once per sample
    assert all(shape[1] == 1 for shape in shapes[1:])  # then decode steps only
    assert max(shape[0] for shape in shapes[1:]) == 4  # the four samples decode together


def test_adapter_files_cannot_change_the_shared_base_model(
    engine: TorchEngine, base_model: torch.nn.Module, tmp_path: Path
) -> None:
    adapter = make_adapter(3, LoraSpec(rank=4), tmp_path)
    # peft's save_embedding_layers puts the tied base embedding into the file; make it wrong
    with TemporaryDirectory() as folder:
        adapter.model.save_pretrained(folder, save_embedding_layers=True)
        tensors = load((Path(folder) / "adapter_model.safetensors").read_bytes())
    assert any("base_layer" in key for key in tensors)
    tensors = {k: v + 1.0 if "base_layer" in k else v for k, v in tensors.items()}
    files = {**adapter.files, "adapter_model.safetensors": save(tensors)}
    folder = write_peft_folder(files, tmp_path / "tampered")
    written = load((folder / "adapter_model.safetensors").read_bytes())
    assert written and not any("base_layer" in key for key in written)
    prompt = list(range(10, 30))

    async def scenario() -> tuple[list[float], list[float]]:
        await engine.load_adapter("tampered", folder)
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
        await engine.load_adapter("first", adapter_a.folder)
        await engine.load_adapter("second", adapter_b.folder)
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
    engine: TorchEngine, adapter_a: Adapter, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"adapter_config\.json"):
        write_peft_folder({"adapter_model.safetensors": b"123"}, tmp_path / "x")
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        write_peft_folder({**adapter_a.files, "adapter_model.safetensors": b"1"}, tmp_path / "x")
    config = json.loads(adapter_a.files["adapter_config.json"])
    wrong = {**adapter_a.files, "adapter_config.json": json.dumps({**config, "r": 3}).encode()}
    folder = write_peft_folder(wrong, tmp_path / "wrong-rank")

    async def scenario() -> list[float]:
        with pytest.raises(ValueError, match="not an adapter of this base model"):
            await engine.load_adapter("x", folder)
        return await engine.compute_logprobs(None, [1, 2, 3])

    assert len(run(scenario())) == 2
