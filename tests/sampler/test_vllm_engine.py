"""The vLLM engine (the default): parity with the trainer's forward, mixed-adapter batches, seeds,
stops, prompt logprobs beside running requests, bad adapters, cancellation, and a dead engine core
reported as UNAVAILABLE and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
import safetensors.torch
import torch

from sampler.conftest import Adapter, make_adapter, reference_logprobs, run
from treadle_models import LoraSpec, load_model, load_tokenizer
from treadle_models.sources import SMOLLM2
from treadle_runtime.errors import OpError
from treadle_sampler.config import SamplerConfig
from treadle_sampler.engine import Completion, SamplingOptions
from treadle_sampler.local_adapters import write_peft_folder
from treadle_sampler.vllm_engine import VLLMEngine, _Turns


async def collect(
    engine: VLLMEngine, adapter: str | None, prompt: list[int], n: int, options: SamplingOptions
) -> list[Completion]:
    """Every completion of one request, in index order."""
    results = [item async for item in engine.sample(adapter, prompt, n, options)]
    return [completion for _, completion in sorted(results, key=lambda item: item[0])]


def drawn_from_logprobs(
    model: torch.nn.Module, prompt: list[int], completion: list[int], options: SamplingOptions
) -> torch.Tensor:
    """Logprobs of `completion` under the distribution each token was drawn from: the tempered
    logits, truncated to top_k (the contract, sampling.py)."""
    ids_1T = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits_TV = model(input_ids=ids_1T).logits[0, len(prompt) - 1 : -1].float()
    logits_TV = logits_TV / options.temperature
    if options.top_k:
        kth_T1 = torch.topk(logits_TV, options.top_k, dim=-1).values[:, -1:]
        logits_TV = logits_TV.masked_fill(logits_TV < kth_T1, float("-inf"))
    return torch.log_softmax(logits_TV, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


@pytest.fixture
def loaded(engine: VLLMEngine, four: dict[str, Adapter]) -> Iterator[dict[str, Adapter]]:
    async def load() -> None:
        for key, adapter in four.items():
            await engine.load_adapter(key, adapter.folder)

    async def evict() -> None:
        for key in four:
            await engine.evict(key)

    run(load())
    yield four
    run(evict())


def test_mixed_adapter_batches_match_solo_runs_and_the_trainers_forward(
    engine: VLLMEngine, loaded: dict[str, Adapter], base_model: torch.nn.Module
) -> None:
    requests = [
        ("a", list(range(100, 131)), 3, SamplingOptions(max_tokens=12, seed=5)),
        ("b", [7, 8, 9], 2, SamplingOptions(max_tokens=12, seed=9, top_k=50)),
        ("c", list(range(300, 310)), 1, SamplingOptions(max_tokens=12, temperature=0)),
        ("d", [42] * 17, 2, SamplingOptions(max_tokens=12, seed=1, temperature=0.7)),
        ("a", [5, 6], 1, SamplingOptions(max_tokens=12, seed=2)),
        ("c", list(range(900, 940)), 2, SamplingOptions(max_tokens=12, seed=3)),
        ("d", [11, 12, 13, 14], 1, SamplingOptions(max_tokens=12, seed=4)),
        (None, list(range(20, 28)), 2, SamplingOptions(max_tokens=12, seed=6)),
    ]

    async def scenario() -> tuple[list[list[Completion]], list[list[Completion]]]:
        together = await asyncio.gather(*(collect(engine, *r) for r in requests))
        alone = [await collect(engine, *r) for r in requests]
        return together, alone

    together, alone = run(scenario())
    models = {key: adapter.model for key, adapter in loaded.items()}
    for (key, prompt, n, options), batched, solo in zip(requests, together, alone, strict=True):
        assert len(batched) == n
        for x, y in zip(batched, solo, strict=True):
            assert x.tokens == y.tokens and x.stop_reason == y.stop_reason == "length"
        model = base_model if key is None else models[key]
        for completion in batched:
            if options.temperature == 0:
                expected = reference_logprobs(model, prompt, completion.tokens)
                greedy = torch.argmax(
                    model(input_ids=torch.tensor([prompt + completion.tokens])).logits[0], -1
                )
                assert completion.tokens == greedy[len(prompt) - 1 : -1].tolist()
            else:
                expected = drawn_from_logprobs(model, prompt, completion.tokens, options)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
    assert len({tuple(c.tokens) for c in together[0]}) == 3  # seed + i: three different draws


def test_base_model_requests_get_no_adapter_when_every_lora_slot_is_taken(
    adapter_a: Adapter, adapter_b: Adapter, base_model: torch.nn.Module
) -> None:
    """vLLM's CPU ops read the last slot for a request without an adapter; the grouped ops
    (vllm_cpu_lora) give it none."""
    own = VLLMEngine.from_config(
        SamplerConfig(base_model="treadle/tiny-llama", torch_threads=2, vllm_max_loras=2)
    )
    greedy = SamplingOptions(max_tokens=8, temperature=0)
    prompt = list(range(40, 52))

    async def scenario() -> list[list[Completion]]:
        await own.load_adapter("a", adapter_a.folder)
        await own.load_adapter("b", adapter_b.folder)
        try:
            return await asyncio.gather(
                *(collect(own, key, prompt, 1, greedy) for key in ("a", "b", None, "b", None))
            )
        finally:
            await own.close()

    results = run(scenario())
    models = [adapter_a.model, adapter_b.model, base_model, adapter_b.model, base_model]
    for model, (completion,) in zip(models, results, strict=True):
        ids = torch.tensor([prompt + completion.tokens])
        with torch.no_grad():
            greedy_tokens = torch.argmax(model(input_ids=ids).logits[0], -1)
        assert completion.tokens == greedy_tokens[len(prompt) - 1 : -1].tolist()
        expected = reference_logprobs(model, prompt, completion.tokens)
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_a_fixed_seed_gives_the_same_tokens_and_another_seed_does_not(engine: VLLMEngine) -> None:
    prompt = list(range(60, 80))

    async def draw(seed: int) -> list[int]:
        (completion,) = await collect(engine, None, prompt, 1, SamplingOptions(16, seed=seed))
        return completion.tokens

    first, again, other = run(draw(7)), run(draw(7)), run(draw(8))
    assert first == again != other


def test_prompt_logprobs_are_exact_even_beside_running_requests(
    engine: VLLMEngine, loaded: dict[str, Adapter], base_model: torch.nn.Module
) -> None:
    prompt = list(range(10, 40))

    async def scenario() -> list[list[float]]:
        running = [
            asyncio.ensure_future(collect(engine, key, [1, 2, 3], 2, SamplingOptions(40, seed=1)))
            for key in ("a", "b", None)
        ]
        scores = await asyncio.gather(
            *(engine.compute_logprobs(key, prompt) for key in ("a", "b", "c", "d", None))
        )
        await asyncio.gather(*running)  # the engine kept serving them
        return list(scores)

    scores = run(scenario())
    models = [*(loaded[key].model for key in "abcd"), base_model]
    for logprobs, model in zip(scores, models, strict=True):
        expected = reference_logprobs(model, prompt[:1], prompt[1:])
        assert len(logprobs) == len(prompt) - 1
        assert torch.allclose(torch.tensor(logprobs), expected, atol=1e-4)
    assert run(engine.compute_logprobs(None, [5])) == []


def test_a_full_length_sequence_is_scored_and_a_full_length_sample_runs(
    engine: VLLMEngine, loaded: dict[str, Adapter]
) -> None:
    length = engine.spec.max_seq_len
    tokens = [(7 * i) % 1000 + 3 for i in range(length)]

    async def scenario() -> tuple[list[float], Completion]:
        scores = await engine.compute_logprobs("a", tokens)
        options = SamplingOptions(max_tokens=2, seed=0, stop_token_ids=())
        (completion,) = await collect(engine, "a", tokens[:-2], 1, options)
        return scores, completion

    scores, completion = run(scenario())
    expected = reference_logprobs(loaded["a"].model, tokens[:1], tokens[1:])
    assert torch.allclose(torch.tensor(scores), expected, atol=1e-4)
    assert len(completion.tokens) == 2 or completion.stop_reason == "stop"


def test_many_seeded_prompts_at_once_are_served(engine: VLLMEngine) -> None:
    # more prompt tokens than one engine step takes by default: vLLM would split a prefill
    prompts = [[(13 * i + k) % 1000 + 3 for k in range(60)] for i in range(48)]

    async def scenario() -> list[list[Completion]]:
        options = [SamplingOptions(max_tokens=4, seed=i) for i in range(len(prompts))]
        return await asyncio.gather(
            *(collect(engine, None, p, 1, o) for p, o in zip(prompts, options, strict=True))
        )

    assert all(len(c.tokens) == 4 or c.stop_reason == "stop" for (c,) in run(scenario()))


def test_stops_by_token_id_string_and_length_keep_the_stopping_tokens(engine: VLLMEngine) -> None:
    prompt = list(range(1000, 1020))  # word pieces, not bytes: their text is readable
    greedy = SamplingOptions(max_tokens=20, temperature=0)
    (free,) = run(collect(engine, None, prompt, 1, greedy))
    assert free.stop_reason == "length" and len(free.tokens) == 20
    stop_id = free.tokens[5]
    first = free.tokens.index(stop_id)
    options = SamplingOptions(max_tokens=20, temperature=0, stop_token_ids=(stop_id,))
    (by_id,) = run(collect(engine, None, prompt, 1, options))
    assert (by_id.stop_reason, by_id.tokens) == ("stop", free.tokens[: first + 1])

    tokenizer = load_tokenizer("treadle/tiny-llama")
    text = tokenizer.decode(free.tokens[:9])
    needle = text[-3:]  # ends inside the 9th token's text (or at its end)
    options = SamplingOptions(max_tokens=20, temperature=0, stop_strings=(needle,))
    (by_string,) = run(collect(engine, None, prompt, 1, options))
    assert (
        by_string.stop_reason == "stop" and by_string.tokens == free.tokens[: len(by_string.tokens)]
    )
    assert needle in tokenizer.decode(by_string.tokens)
    assert needle not in tokenizer.decode(by_string.tokens[:-1])


def test_the_end_of_sequence_token_stops_and_is_kept(engine: VLLMEngine) -> None:
    eos = 2  # tiny-llama's config and generation config

    async def scenario() -> list[Completion]:
        # many free draws: some reach EOS only if it is likely; force it with a stop id instead
        options = SamplingOptions(max_tokens=8, seed=0, stop_token_ids=())
        return await collect(engine, None, [eos, eos, eos], 8, options)

    for completion in run(scenario()):
        if eos in completion.tokens:
            assert completion.tokens[-1] == eos and completion.stop_reason == "stop"
        else:
            assert completion.stop_reason == "length"
    assert eos in engine.eos_token_ids


def narrowed(adapter: Adapter) -> bytes:
    """The adapter's weights with every lora_A cut to half its input width (another model's)."""
    tensors = safetensors.torch.load(adapter.files["adapter_model.safetensors"])
    for name, tensor in tensors.items():
        if "lora_A" in name:
            tensors[name] = tensor[:, : tensor.shape[1] // 2].contiguous()
    return safetensors.torch.save(tensors)


def test_bad_adapters_are_refused_and_the_engine_keeps_serving(
    engine: VLLMEngine, adapter_a: Adapter, adapter_root: Path, tmp_path: Path
) -> None:
    config = json.loads(adapter_a.files["adapter_config.json"])
    wrong_rank = {**adapter_a.files, "adapter_config.json": json.dumps({**config, "r": 3}).encode()}
    wrong_width = {**adapter_a.files, "adapter_model.safetensors": narrowed(adapter_a)}
    not_weights = {**adapter_a.files, "adapter_model.safetensors": b"not safetensors"}
    too_big = make_adapter(21, LoraSpec(rank=128, train_unembed=False), adapter_root)  # > 64

    async def scenario() -> list[float]:
        with pytest.raises(ValueError, match=r"declares rank \[3\] but .* rank \[8\]"):
            await engine.load_adapter("x", write_peft_folder(wrong_rank, tmp_path / "rank"))
        with pytest.raises(ValueError, match=r"lora_A.weight: width 64, the base model's is 128"):
            await engine.load_adapter("x", write_peft_folder(wrong_width, tmp_path / "width"))
        with pytest.raises(ValueError, match=r"adapter_model\.safetensors: .*deserializing"):
            await engine.load_adapter("x", write_peft_folder(not_weights, tmp_path / "junk"))
        with pytest.raises(ValueError, match=r"rank 128 is above .* vllm_max_lora_rank 64"):
            await engine.load_adapter("y", too_big.folder)
        with pytest.raises(KeyError):
            await engine.compute_logprobs("x", [1, 2, 3])
        return await engine.compute_logprobs(None, [1, 2, 3])

    assert len(run(scenario())) == 2


def test_a_higher_rank_adapter_grows_the_buffers_after_the_requests_in_flight(
    engine: VLLMEngine, loaded: dict[str, Adapter], adapter_root: Path
) -> None:
    wide = make_adapter(22, LoraSpec(rank=32), adapter_root)
    prompt = list(range(50, 60))
    options = SamplingOptions(max_tokens=6, temperature=0)

    async def scenario() -> tuple[list[Completion], list[Completion], list[Completion]]:
        running = asyncio.ensure_future(collect(engine, "a", prompt, 2, options))
        await asyncio.sleep(0.2)
        await engine.load_adapter("wide", wide.folder)
        after_a = await collect(engine, "a", prompt, 1, options)  # reloaded from its folder
        return await running, after_a, await collect(engine, "wide", prompt, 1, options)

    before_a, after_a, (grown,) = run(scenario())
    assert engine.args["max_lora_rank"] == 32
    assert before_a[0].tokens == after_a[0].tokens
    expected = reference_logprobs(wide.model, prompt, grown.tokens)
    assert torch.allclose(torch.tensor(grown.logprobs), expected, atol=1e-4)
    run(engine.evict("wide"))


def test_a_cancelled_exclusive_turn_lets_shared_requests_go_on() -> None:
    async def scenario() -> bool:
        turns = _Turns()
        async with turns.shared():
            waiting = asyncio.ensure_future(turns.exclusive().__aenter__())
            await asyncio.sleep(0)
            later = asyncio.ensure_future(turns.shared().__aenter__())  # held back by `waiting`
            await asyncio.sleep(0)
            waiting.cancel()
            await asyncio.wait_for(later, timeout=5)
        return True

    assert run(scenario())


def test_a_request_whose_caller_goes_away_is_aborted(engine: VLLMEngine) -> None:
    async def scenario() -> list[int]:
        long = asyncio.ensure_future(
            collect(engine, None, [1, 2, 3], 4, SamplingOptions(max_tokens=1500, seed=0))
        )
        await asyncio.sleep(1.0)
        long.cancel()
        (short,) = await collect(engine, None, [4, 5], 1, SamplingOptions(max_tokens=3, seed=0))
        return short.tokens

    assert len(run(scenario())) == 3
    deadline = time.monotonic() + 10
    while engine.unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.unfinished_requests() == 0


def engine_cores() -> list[psutil.Process]:
    """This process's vLLM engine cores (vLLM names them VLLM::EngineCore)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_a_dead_engine_core_is_unavailable_then_restarted_and_close_ends_requests() -> None:
    others = {process.pid for process in engine_cores()}
    own = VLLMEngine.from_config(SamplerConfig(base_model="treadle/tiny-llama"))
    options = SamplingOptions(max_tokens=2000, seed=0)

    async def scenario() -> tuple[BaseException | None, BaseException | None]:
        running = asyncio.ensure_future(collect(own, None, [1, 2, 3], 2, options))
        await asyncio.sleep(1.0)
        for process in engine_cores():
            if process.pid not in others:  # this engine's core only
                os.kill(process.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(running, 60)
            error = None
        except OpError as exc:
            error = exc
        started = time.monotonic()
        while True:  # UNAVAILABLE while restarting, then served again
            try:
                await collect(own, None, [4, 5], 1, SamplingOptions(max_tokens=2, seed=0))
                break
            except OpError as exc:
                assert exc.code == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - started < 120
                await asyncio.sleep(0.5)
        in_flight = asyncio.ensure_future(collect(own, None, [1, 2, 3], 1, options))
        await asyncio.sleep(1.0)
        await own.close()
        try:
            await asyncio.wait_for(in_flight, 30)  # ended, not left hanging
            closed = None
        except (asyncio.CancelledError, OpError) as exc:
            closed = exc
        return error, closed

    try:
        error, closed = run(scenario())
    finally:
        run(own.close())
    assert isinstance(error, OpError) and error.code == grpc.StatusCode.UNAVAILABLE
    assert "restarting" in error.message
    assert own.restarts == 1
    assert closed is not None


@pytest.mark.parametrize("base", ["treadle/tiny-qwen2", "treadle/tiny-qwen3", "smollm2"])
def test_other_models_match_the_trainers_forward(base: str, tmp_path: Path) -> None:
    name = SMOLLM2 if base == "smollm2" else base
    model = load_model(name)
    # vLLM serves LoRA on lm_head only where it is tied to the embeddings (not tiny-qwen2's)
    spec = LoraSpec(rank=8, train_unembed=name != "treadle/tiny-qwen2")
    adapter = make_adapter(31, spec, tmp_path, base_model=name)
    engine = VLLMEngine.from_config(SamplerConfig(base_model=name))
    prompt = list(range(300, 320))
    try:

        async def scenario() -> tuple[list[Completion], list[float]]:
            await engine.load_adapter("x", adapter.folder)
            sampled = await asyncio.gather(
                collect(engine, "x", prompt, 2, SamplingOptions(max_tokens=10, seed=3)),
                collect(engine, None, prompt, 1, SamplingOptions(max_tokens=10, seed=3)),
            )
            return [*sampled[0], *sampled[1]], await engine.compute_logprobs("x", prompt)

        completions, prompt_logprobs = run(scenario())
    finally:
        run(engine.close())
    for completion, reference in zip(
        completions, [adapter.model, adapter.model, model], strict=True
    ):
        expected = reference_logprobs(reference, prompt, completion.tokens)
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
    expected = reference_logprobs(adapter.model, prompt[:1], prompt[1:])
    assert torch.allclose(torch.tensor(prompt_logprobs), expected, atol=1e-4)
