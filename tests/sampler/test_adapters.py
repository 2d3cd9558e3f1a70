"""The adapter cache behind a real sampler: LRU eviction, shared fetches, pinning while in use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch
from prometheus_client import REGISTRY

from sampler.conftest import (
    TINY,
    Adapter,
    make_adapter,
    publish,
    reference_logprobs,
    run,
    sampler_server,
)
from treadle.v1 import common_pb2, sampler_pb2, sampler_pb2_grpc
from treadle_models import LoraSpec
from treadle_sampler.engine import SamplingEngine
from treadle_sampler.vllm_engine import VLLMEngine

PROMPT = [11, 12, 13, 14, 15, 16]


@pytest.fixture(scope="module")
def third(adapter_root: Path) -> Adapter:
    """One more adapter, rank 2 on attention only."""
    return make_adapter(5, LoraSpec(rank=2, train_mlp=False, train_unembed=False), adapter_root)


def loads() -> float:
    return REGISTRY.get_sample_value("treadle_sampler_adapter_loads_total") or 0.0


def sample(
    stub: sampler_pb2_grpc.SamplerStub, tenant: str, path: str, seed: int = 0, max_tokens: int = 6
) -> common_pb2.SampledSequence:
    """The one sequence of a single-sample request."""
    chunk = common_pb2.ModelInputChunk(encoded_text=common_pb2.EncodedTextChunk(tokens=PROMPT))
    inner = common_pb2.SampleRequest(
        model_path=path,
        base_model="" if path else TINY,
        prompt=common_pb2.ModelInput(chunks=[chunk]),
        num_samples=1,
        sampling_params=common_pb2.SamplingParams(max_tokens=max_tokens, seed=seed),
    )
    events = list(stub.Sample(sampler_pb2.SamplerSampleRequest(tenant=tenant, request=inner)))
    return events[0].sequence.sequence


def cached(stub: sampler_pb2_grpc.SamplerStub) -> list[str]:
    return list(stub.GetSamplerInfo(sampler_pb2.GetSamplerInfoRequest()).cached_adapters)


@pytest.fixture
def paths(
    checkpoints: str, tenant: str, adapter_a: Adapter, adapter_b: Adapter, third: Adapter
) -> list[str]:
    """Three of `tenant`'s sampler checkpoints."""
    return [
        publish(checkpoints, tenant, f"treadle://run-{i}/sampler_weights/s1", adapter)
        for i, adapter in enumerate((adapter_a, adapter_b, third))
    ]


@pytest.fixture
def two_slots(engine: SamplingEngine, checkpoints: str) -> Iterator[sampler_pb2_grpc.SamplerStub]:
    """A sampler that keeps at most two adapters loaded."""
    with sampler_server(engine, checkpoints, max_adapters=2) as running:
        yield running


def folders(parent: Path) -> list[Path]:
    """The PEFT folders a sampler with adapter_dir=parent keeps for its loaded adapters."""
    return [p for p in parent.glob("*/*") if (p / "adapter_config.json").exists()]


def test_the_least_recently_used_adapter_is_evicted_cleanly_and_reloads_unchanged(
    engine: VLLMEngine, checkpoints: str, tenant: str, paths: list[str], tmp_path: Path
) -> None:
    with sampler_server(engine, checkpoints, max_adapters=2, adapter_dir=str(tmp_path)) as stub:
        before = loads()
        first = sample(stub, tenant, paths[0], seed=3)
        sample(stub, tenant, paths[1])
        sample(stub, tenant, paths[0])  # A is now more recent than B
        sample(stub, tenant, paths[2])
        assert cached(stub) == [paths[0], paths[2]]
        assert len(folders(tmp_path)) == 2  # B's local copy went with it
        sample(stub, tenant, paths[1])
        assert cached(stub) == [paths[2], paths[1]]
        assert sample(stub, tenant, paths[0], seed=3).tokens == first.tokens
        assert loads() - before == 5  # A, B, C, B again, A again
        assert len(folders(tmp_path)) == 2
    assert list(tmp_path.iterdir()) == []  # shutdown unloads the rest and deletes the files
    assert run(engine.held_adapters()) == 0  # vLLM holds no LoRA weights any more


def test_concurrent_requests_for_a_new_adapter_fetch_it_once(
    two_slots: sampler_pb2_grpc.SamplerStub, tenant: str, paths: list[str]
) -> None:
    before = loads()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda seed: sample(two_slots, tenant, paths[1], seed), range(6)))
    assert loads() - before == 1
    assert len({tuple(r.tokens) for r in results}) == 6


def test_an_adapter_in_use_is_not_evicted(
    engine: SamplingEngine, checkpoints: str, tenant: str, paths: list[str], adapter_a: Adapter
) -> None:
    with sampler_server(engine, checkpoints, max_adapters=1) as stub:
        long: list[common_pb2.SampledSequence] = []
        worker = threading.Thread(
            target=lambda: long.append(sample(stub, tenant, paths[0], seed=9, max_tokens=400))
        )
        worker.start()
        others = [sample(stub, tenant, path) for path in (paths[1], paths[2], paths[1])]
        during, still_running = cached(stub), worker.is_alive()
        worker.join(timeout=120)
        assert still_running and paths[0] in during  # pinned: kept beyond capacity
        assert len(long) == 1 and len(long[0].tokens) == 400
        expected = reference_logprobs(adapter_a.model, PROMPT, list(long[0].tokens))
        assert torch.allclose(torch.tensor(list(long[0].logprobs)), expected, atol=1e-4)
        assert all(len(o.tokens) == 6 for o in others)
        assert len(cached(stub)) == 1


def test_a_sampler_without_checkpoints_serves_the_base_model_only(engine: SamplingEngine) -> None:
    with sampler_server(engine, "") as stub:
        assert len(sample(stub, "t", "", max_tokens=2).tokens) == 2
        with pytest.raises(grpc.RpcError) as caught:
            sample(stub, "t", "treadle://run/sampler_weights/x")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details().startswith("model_path:")
