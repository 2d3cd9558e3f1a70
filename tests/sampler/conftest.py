"""Sampler test helpers: one tiny-llama vLLM engine (and a torch engine), real LoRA adapters,
real servers.

Adapters reach the sampler the production way: published through CheckpointClient.put to a real
checkpoints server over the session's SeaweedFS, and fetched by the sampler by path. An adapter
here is what a trainer would save: a PeftModel over the same base whose LoRA B
matrices hold small random values (so it differs from the base), saved with peft's
save_pretrained; the PeftModel itself stays as the reference its logprobs are checked against.
Engine-level tests load it from `folder`, the PEFT folder the sampler's adapter cache would write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel

from fixtures.grpc_server import running_server
from fixtures.s3 import S3Server
from treadle.paths import parse_path
from treadle.v1 import common_pb2, sampler_pb2_grpc
from treadle_checkpoints.app import CheckpointsApp
from treadle_checkpoints.config import CheckpointsConfig
from treadle_models import LoraSpec, load_model, peft_lora_config, target_logprobs
from treadle_runtime.checkpoint_client import CheckpointClient
from treadle_sampler.app import SamplerApp
from treadle_sampler.config import SamplerConfig
from treadle_sampler.engine import SamplingEngine
from treadle_sampler.local_adapters import write_peft_folder
from treadle_sampler.torch_engine import TorchEngine
from treadle_sampler.vllm_engine import VLLMEngine

TINY = "treadle/tiny-llama"
T = TypeVar("T")


@dataclass
class Adapter:
    """Saved PEFT adapter files and the model they came from."""

    spec: LoraSpec
    files: dict[str, bytes]
    model: PeftModel
    folder: Path  # the files as the adapter cache writes them for an engine


def make_adapter(
    seed: int, spec: LoraSpec, root: Path, *, scale: float = 0.2, base_model: str = TINY
) -> Adapter:
    """A LoRA adapter on `base_model` with random B matrices, as peft saves it (folder in root)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(load_model(base_model), peft_lora_config(spec))
        generator = torch.Generator().manual_seed(seed)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data = torch.randn(param.shape, generator=generator) * scale
        model.eval()
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder, save_embedding_layers=False)
            files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
    return Adapter(spec, files, model, write_peft_folder(files, root / f"adapter-{seed}"))


def reference_logprobs(
    model: PreTrainedModel, prompt: list[int], completion: list[int]
) -> torch.Tensor:
    """Logprobs of `completion` after `prompt` from one plain forward (the trainer's way)."""
    ids_1T = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits_1TV = model(input_ids=ids_1T).logits
    return target_logprobs(logits_1TV[:, :-1], ids_1T[:, 1:])[0, len(prompt) - 1 :]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coroutine)


@pytest.fixture(scope="session")
def engine() -> Iterator[VLLMEngine]:
    """The tiny-llama vLLM engine (the default) every sampler test shares (ranks up to 64)."""
    config = SamplerConfig(base_model=TINY, torch_threads=2, vllm_max_lora_rank=64)
    instance = VLLMEngine.from_config(config)
    yield instance
    run(instance.close())


@pytest.fixture(scope="session")
def torch_engine() -> Iterator[TorchEngine]:
    """The tiny-llama torch engine, for its own tests."""
    instance = TorchEngine(TINY, max_batch_size=32)
    yield instance
    run(instance.close())


@pytest.fixture(scope="session")
def base_model() -> PreTrainedModel:
    """The plain base model, for reference logprobs."""
    return load_model(TINY)


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where test adapters' PEFT folders are written."""
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="session")
def adapter_a(adapter_root: Path) -> Adapter:
    """Rank 8 on attention, MLP and unembedding."""
    return make_adapter(1, LoraSpec(rank=8), adapter_root)


@pytest.fixture(scope="session")
def adapter_b(adapter_root: Path) -> Adapter:
    """Rank 4 on attention and MLP only."""
    return make_adapter(2, LoraSpec(rank=4, train_unembed=False), adapter_root)


@pytest.fixture(scope="session")
def four(adapter_root: Path, adapter_a: Adapter, adapter_b: Adapter) -> dict[str, Adapter]:
    """Four adapters by key: ranks 8 and 4 (the shared ones), 16, and 2 on the MLP only."""
    return {
        "a": adapter_a,
        "b": adapter_b,
        "c": make_adapter(11, LoraSpec(rank=16), adapter_root),
        "d": make_adapter(12, LoraSpec(rank=2, train_attn=False), adapter_root),
    }


@pytest.fixture(scope="session")
def checkpoints(s3_server: S3Server) -> Iterator[str]:
    """Address of a real checkpoints server over the session's S3 server."""
    config = CheckpointsConfig(
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        bucket="treadle-sampler-tests",
        sweep_interval_seconds=0,
    )
    app = CheckpointsApp(config)
    with running_server(app, service="checkpoints", config=config) as address:
        yield address


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses."""
    return f"tenant-{uuid.uuid4().hex[:8]}"


def publish(
    checkpoints: str,
    tenant: str,
    path: str,
    adapter: Adapter,
    base_model: str = TINY,
) -> str:
    """Store `adapter` as the sampler checkpoint `path` of `tenant`; returns the path."""
    parsed = parse_path(path)
    info = common_pb2.CheckpointInfo(
        path=path,
        run_id=parsed.run_id,
        name=parsed.name,
        kind=common_pb2.CHECKPOINT_KIND_SAMPLER,
        base_model=base_model,
        lora_config=common_pb2.LoraConfig(rank=adapter.spec.rank),
    )

    async def put() -> None:
        client = CheckpointClient(checkpoints)
        try:
            await client.put(tenant, info, adapter.files)
        finally:
            await client.close()

    run(put())
    return path


@contextmanager
def sampler_server(
    engine: SamplingEngine, checkpoints: str, **overrides: Any
) -> Iterator[sampler_pb2_grpc.SamplerStub]:
    """A real sampler server on `engine`, fetching adapters from `checkpoints`; yields a stub."""
    config = dataclasses.replace(
        SamplerConfig(checkpoints=checkpoints, max_num_samples=8), **overrides
    )
    app = SamplerApp(config, engine=engine)
    with running_server(app, service="sampler", config=config) as address:
        with grpc.insecure_channel(address) as channel:
            yield sampler_pb2_grpc.SamplerStub(channel)
