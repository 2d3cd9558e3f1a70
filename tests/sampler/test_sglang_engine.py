"""Contract tests of the SGLang engine against a stand-in that replays SGLang's documented HTTP API.

SGLang itself cannot run here (CUDA-only wheels); tests/sampler/sglang_contract_server.py answers
in its documented shapes and refuses what it would refuse. These tests check what the adapter
sends (field by field) and how it reads the answers, alone and behind a real sampler server with
adapters from a real checkpoints service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from transformers import AutoConfig

from fixtures.grpc_server import free_port
from sampler.conftest import TINY, Adapter, make_adapter, publish, run, sampler_server
from sampler.sglang_contract_server import ContractSGLang
from treadle.v1 import common_pb2, sampler_pb2
from treadle_models import LoraSpec, model_spec
from treadle_runtime.errors import OpError
from treadle_sampler.config import SamplerConfig
from treadle_sampler.engine import Completion, SamplingOptions, make_engine
from treadle_sampler.sglang_engine import SGLangEngine
from treadle_sampler.sglang_server import LaunchedServer, launch_command, model_folder, wait_healthy

STAND_IN = Path(__file__).with_name("sglang_contract_server.py")
PROMPT = [5, 6, 7, 8]


@dataclasses.dataclass
class StandIn:
    state: ContractSGLang
    url: str


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """A fresh stand-in on a free port."""
    state = ContractSGLang()
    server = state.serve()
    yield StandIn(state, f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    assert state.seen.unexpected == []  # e.g. never /load_lora_adapter_from_tensors


@pytest.fixture
def engine(stand_in: StandIn) -> Iterator[SGLangEngine]:
    """An SGLang engine attached to the stand-in."""
    instance = SGLangEngine(model_spec(TINY), stand_in.url, max_in_flight=8, timeout=30)
    yield instance
    run(instance.close())


async def collect(
    engine: SGLangEngine, adapter: str | None, n: int, options: SamplingOptions
) -> list[Completion]:
    results = [item async for item in engine.sample(adapter, PROMPT, n, options)]
    return [completion for _, completion in sorted(results, key=lambda item: item[0])]


def generates(stand_in: StandIn) -> list[dict[str, Any]]:
    return [body for path, body in stand_in.state.seen.requests if path == "/generate"]


def test_each_sequence_is_one_documented_generate_request(
    engine: SGLangEngine, stand_in: StandIn, adapter_a: Adapter
) -> None:
    options = SamplingOptions(max_tokens=6, temperature=0.8, top_p=0.9, seed=7)

    async def scenario() -> tuple[list[Completion], list[Completion]]:
        await engine.load_adapter("k1", adapter_a.folder)
        return await collect(engine, "k1", 3, options), await collect(engine, "k1", 3, options)

    first, again = run(scenario())
    bodies = sorted(generates(stand_in)[:3], key=lambda b: b["sampling_params"]["sampling_seed"])
    assert bodies == [
        {
            "input_ids": PROMPT,
            "sampling_params": {
                "max_new_tokens": 6,
                "temperature": 0.8,
                "top_p": 0.9,
                "top_k": -1,
                "min_p": 0.0,
                "repetition_penalty": 1.0,
                "sampling_seed": seed,
                "no_stop_trim": True,
            },
            "return_logprob": True,
            "lora_path": "k1",
        }
        for seed in (7, 8, 9)  # sequence i draws with seed + i
    ]
    for body, completion in zip(bodies, first, strict=True):
        reply = stand_in.state.generate(body)
        assert completion.tokens == reply["output_ids"]
        assert completion.logprobs == [e[0] for e in reply["meta_info"]["output_token_logprobs"]]
        assert completion.stop_reason == "length"
    assert [c.tokens for c in again] == [c.tokens for c in first]  # same seed, same tokens
    assert len({tuple(c.tokens) for c in first}) == 3


def test_stop_token_ids_stop_strings_and_length_become_stop_reasons(
    engine: SGLangEngine, stand_in: StandIn
) -> None:
    free = run(collect(engine, None, 1, SamplingOptions(max_tokens=24, seed=3)))[0]
    tokens = free.tokens
    assert free.stop_reason == "length" and len(tokens) == 24
    by_id = SamplingOptions(max_tokens=24, seed=3, stop_token_ids=(tokens[5],))
    by_text = SamplingOptions(max_tokens=24, seed=3, stop_strings=(f"{tokens[3]}><",))
    stopped_id, stopped_text = (run(collect(engine, None, 1, o))[0] for o in (by_id, by_text))
    cut = tokens.index(tokens[5]) + 1
    assert (stopped_id.tokens, stopped_id.stop_reason) == (tokens[:cut], "stop")  # kept
    assert stopped_id.logprobs == free.logprobs[:cut]
    assert (stopped_text.tokens, stopped_text.stop_reason) == (tokens[:5], "stop")
    sent = generates(stand_in)
    assert sent[1]["sampling_params"]["stop_token_ids"] == [tokens[5]]
    assert sent[2]["sampling_params"]["stop"] == [f"{tokens[3]}><"]
    assert "lora_path" not in sent[0]  # the base model


def test_greedy_and_compute_logprobs_use_logprob_start_len_zero(
    engine: SGLangEngine, stand_in: StandIn
) -> None:
    greedy = SamplingOptions(max_tokens=8, temperature=0)
    first, second = (run(collect(engine, None, 1, greedy))[0] for _ in range(2))
    assert first.tokens == second.tokens
    scored = PROMPT + first.tokens
    logprobs = run(engine.compute_logprobs(None, scored))
    assert generates(stand_in)[-1] == {
        "input_ids": scored,
        "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
        "return_logprob": True,
        "logprob_start_len": 0,
    }
    assert len(logprobs) == len(scored) - 1  # entry 0 (null) dropped
    assert logprobs[len(PROMPT) - 1 :] == first.logprobs  # the same token, the same logprob
    assert run(engine.compute_logprobs(None, [9])) == []


def test_adapters_are_loaded_by_path_and_unloaded(
    engine: SGLangEngine, stand_in: StandIn, adapter_a: Adapter, adapter_root: Path
) -> None:
    too_big = make_adapter(21, LoraSpec(rank=128), adapter_root)

    async def scenario() -> None:
        await engine.load_adapter("k1", adapter_a.folder)
        with pytest.raises(ValueError, match="max-lora-rank"):
            await engine.load_adapter("k2", too_big.folder)
        await engine.evict("k1")
        with pytest.raises(KeyError):
            await engine.compute_logprobs("k1", PROMPT)

    run(scenario())
    assert stand_in.state.seen.loads == [
        {
            "lora_name": "k1",
            "lora_path": str(adapter_a.folder),
            "files": ["adapter_config.json", "adapter_model.safetensors"],
        }
    ]
    assert stand_in.state.seen.unloads == ["k1"]


def test_behind_a_sampler_adapters_come_from_checkpoints_and_leave_cleanly(
    engine: SGLangEngine,
    stand_in: StandIn,
    checkpoints: str,
    tenant: str,
    adapter_a: Adapter,
    adapter_b: Adapter,
    tmp_path: Path,
) -> None:
    paths = [
        publish(checkpoints, tenant, f"treadle://run-s{i}/sampler_weights/final", adapter)
        for i, adapter in enumerate((adapter_a, adapter_b))
    ]

    def call(path: str, prompt: list[int] = PROMPT) -> sampler_pb2.SamplerSampleRequest:
        chunk = common_pb2.ModelInputChunk(encoded_text=common_pb2.EncodedTextChunk(tokens=prompt))
        inner = common_pb2.SampleRequest(
            model_path=path,
            prompt=common_pb2.ModelInput(chunks=[chunk]),
            num_samples=2,
            sampling_params=common_pb2.SamplingParams(max_tokens=4, seed=1),
            include_prompt_logprobs=True,
        )
        return sampler_pb2.SamplerSampleRequest(tenant=tenant, request=inner)

    with sampler_server(engine, checkpoints, max_adapters=1, adapter_dir=str(tmp_path)) as stub:
        events = list(stub.Sample(call(paths[0]), timeout=30))
        assert events[-1].done.weights_version == paths[0]
        assert len(events[-1].done.prompt_logprobs) == len(PROMPT) - 1
        assert sorted(e.sequence.index for e in events[:-1]) == [0, 1]
        loaded = Path(stand_in.state.seen.loads[0]["lora_path"])
        assert loaded.parent.parent == tmp_path and loaded.exists()
        names = {b["lora_path"] for b in generates(stand_in)}
        assert names == {stand_in.state.seen.loads[0]["lora_name"]}

        list(stub.Sample(call(paths[1]), timeout=30))  # capacity 1: the first adapter goes
        assert stand_in.state.seen.unloads == [stand_in.state.seen.loads[0]["lora_name"]]
        assert not loaded.exists()
        info = stub.GetSamplerInfo(sampler_pb2.GetSamplerInfoRequest())
        assert (info.engine, list(info.cached_adapters)) == ("sglang", [paths[1]])

        sent = len(stand_in.state.seen.requests)
        for bad, code in (
            (call(paths[1], [1, 49152]), grpc.StatusCode.INVALID_ARGUMENT),
            (call("treadle://run-x/sampler_weights/none"), grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Sample(bad, timeout=30))
            assert caught.value.code() == code
        assert len(stand_in.state.seen.requests) == sent  # refused before reaching SGLang
    assert len(stand_in.state.seen.unloads) == 2  # shutdown unloads the rest


def test_an_unreachable_server_is_unavailable() -> None:
    engine = SGLangEngine(model_spec(TINY), f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(OpError) as caught:
        run(collect(engine, None, 1, SamplingOptions(max_tokens=2)))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    run(engine.close())


def test_the_engine_is_chosen_by_config_in_one_place(stand_in: StandIn) -> None:
    config = SamplerConfig(engine="sglang", sglang_url=stand_in.url, sglang_timeout_seconds=10)
    engine = make_engine(config)
    try:
        assert isinstance(engine, SGLangEngine) and engine.name == "sglang"
        assert engine.spec.name == TINY
    finally:
        asyncio.run(engine.close())


def test_a_launched_server_is_waited_for_and_stopped(tmp_path: Path) -> None:
    config = SamplerConfig(engine="sglang", sglang_max_loras_per_batch=4, sglang_args="--tp 1")
    port = free_port()
    command = launch_command(config, tmp_path, port)
    assert command[1:3] == ["-m", "sglang.launch_server"]
    flags = " ".join(command[3:])
    for flag in (
        f"--model-path {tmp_path}",
        f"--port {port}",
        "--enable-lora",
        "--max-loras-per-batch 4",
        "--max-lora-rank 64",
        "--lora-target-modules all",
        "--enable-deterministic-inference",
        "--dtype bfloat16",
    ):
        assert flag in flags
    assert command[-2:] == ["--tp", "1"]
    server = LaunchedServer(
        [sys.executable, str(STAND_IN), *command[3:]], f"http://127.0.0.1:{port}"
    )
    try:
        wait_healthy(server.url, 30, server.process)
    finally:
        server.stop()
    assert server.process.returncode is not None
    with pytest.raises(RuntimeError, match="exited"):
        wait_healthy(server.url, 5, server.process)


def test_a_tiny_model_is_saved_once_as_a_folder_sglang_can_load() -> None:
    folder = model_folder(TINY)
    assert AutoConfig.from_pretrained(folder).vocab_size == 49152
    assert model_folder(TINY) == folder
    assert model_folder("/models/some-llama") == Path("/models/some-llama")
