"""The trainer process as deployed (TrainerApp from its config) with a real Checkpoints service
over a real S3 server: info, saving and restoring state, sampler checkpoints, failed saves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fixtures.grpc_server import free_port, running_server
from fixtures.s3 import S3Server
from treadle.v1 import common_pb2, trainer_pb2
from treadle_checkpoints.app import CheckpointsApp
from treadle_checkpoints.config import CheckpointsConfig
from treadle_runtime.checkpoint_client import CheckpointClient
from treadle_trainer.app import TrainerApp
from treadle_trainer.config import TrainerConfig
from treadle_trainer.engine import TrainerEngine

from .conftest import MAX_SEQ_LEN, TINY, CycleClient, create, datum, forward_backward, optim_step

DATA = [datum(list(range(100, 120))), datum(list(range(7, 15)))]


@pytest.fixture(scope="module")
def checkpoints(s3_server: S3Server) -> Iterator[str]:
    config = CheckpointsConfig(
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        bucket="treadle-trainer-tests",
        sweep_interval_seconds=0,
    )
    app = CheckpointsApp(config)
    with running_server(app, service="checkpoints", config=config) as address:
        yield address


@contextmanager
def _trainer(
    checkpoints: str, peak_flops: float = 1e11
) -> Iterator[tuple[CycleClient, TrainerApp]]:
    config = TrainerConfig(
        base_model=TINY,
        device="cpu",
        max_seq_len=MAX_SEQ_LEN,
        checkpoints=checkpoints,
        peak_flops=peak_flops,  # 0 measures it at startup (1e11 saves the second it takes)
    )
    app = TrainerApp(config)
    with running_server(app, service="trainer", config=config) as address:
        client = CycleClient(address)
        try:
            yield client, app
        finally:
            client.close()


@pytest.fixture(scope="module")
def trainer(checkpoints: str) -> Iterator[CycleClient]:
    with _trainer(checkpoints) as (client, _):
        yield client


def _save(model_id: str, kind: int, name: str = "", **fields: object) -> trainer_pb2.PlannedOp:
    return trainer_pb2.PlannedOp(
        op_id=f"{model_id}:save",
        model_id=model_id,
        save_checkpoint=common_pb2.SaveCheckpointRequest(name=name, kind=kind, **fields),
    )


def _load(model_id: str, path: str, load_optimizer: bool) -> trainer_pb2.PlannedOp:
    return trainer_pb2.PlannedOp(
        op_id=f"{model_id}:load",
        model_id=model_id,
        load_state=common_pb2.LoadStateRequest(path=path, load_optimizer=load_optimizer),
    )


def _from_state(model_id: str, path: str, tenant: str = "tenant-a") -> trainer_pb2.PlannedOp:
    op = create(model_id)
    op.create_adapter.tenant = tenant
    op.create_adapter.from_state_path = path
    op.create_adapter.load_optimizer = True
    op.create_adapter.ClearField("lora_config")
    return op


def _losses(client: CycleClient, model_ids: list[str], steps: int) -> list[list[float]]:
    history = []
    for _ in range(steps):
        plan = [forward_backward(m, DATA) for m in model_ids]
        plan += [optim_step(m, learning_rate=1e-2) for m in model_ids]
        results = client.run_ok(plan)
        history.append([results[f"{m}:fb"].forward_backward.metrics["loss:sum"] for m in model_ids])
    return history


def test_trainer_info_describes_the_served_model(trainer):
    info = trainer.stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=10)
    assert info.model.name == TINY and info.model.vocab_size == 49152
    assert info.model.max_seq_len == MAX_SEQ_LEN
    assert 32 in info.model.supported_ranks and info.model.architecture == "LlamaForCausalLM"
    assert info.device == "cpu"
    trainer.run_ok([create("counted")])
    after = trainer.stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=10)
    assert after.adapters == info.adapters + 1


def test_saved_state_resumes_training_exactly(trainer):
    trainer.run_ok([create("orig", rank=8, seed=5)])
    _losses(trainer, ["orig"], 2)
    saved = trainer.run_ok([_save("orig", common_pb2.CHECKPOINT_KIND_STATE)])
    info = saved["orig:save"].save_checkpoint.checkpoint
    assert info.path == "treadle://orig/weights/step-000002"
    assert info.step == 2 and info.has_optimizer and info.base_model == TINY
    assert info.lora_config.rank == 8 and info.sha256

    created = trainer.run_ok([_from_state("restored", info.path)])
    assert created["restored:create"].create_adapter.step == 2
    trainer.run_ok([create("reloaded", rank=8, seed=99)])
    loaded = trainer.run_ok([_load("reloaded", info.path, load_optimizer=True)])
    assert loaded["reloaded:load"].load_state.step == 2
    for orig, restored, reloaded in _losses(trainer, ["orig", "restored", "reloaded"], 2):
        assert orig == restored == reloaded


def test_state_is_private_to_its_tenant(trainer):
    trainer.run_ok([create("private", seed=1)])
    saved = trainer.run_ok([_save("private", common_pb2.CHECKPOINT_KIND_STATE, name="mine")])
    path = saved["private:save"].save_checkpoint.checkpoint.path
    results, _ = trainer.run([_from_state("thief", path, tenant="tenant-b")])
    assert results["thief:create"].error.code == "NOT_FOUND"
    assert "tenant-a" not in results["thief:create"].error.message
    results, _ = trainer.run([_load("private", "treadle://private/weights/absent", True)])
    assert results["private:load"].error.code == "NOT_FOUND"


def test_sampler_checkpoint_is_a_peft_adapter_in_the_store(trainer, checkpoints):
    trainer.run_ok([create("sampled", rank=4, seed=2)])
    _losses(trainer, ["sampled"], 1)
    saved = trainer.run_ok(
        [_save("sampled", common_pb2.CHECKPOINT_KIND_SAMPLER, name="v1", renderer_name="llama3")]
    )
    info = saved["sampled:save"].save_checkpoint.checkpoint
    assert info.path == "treadle://sampled/sampler_weights/v1" and not info.has_optimizer
    assert info.renderer_name == "llama3" and info.step == 1

    async def fetch() -> tuple[common_pb2.CheckpointInfo, dict[str, bytes]]:
        client = CheckpointClient(checkpoints)
        try:
            return await client.get("tenant-a", info.path)
        finally:
            await client.close()

    _, files = asyncio.run(fetch())
    assert set(files) == {"adapter_model.safetensors", "adapter_config.json"}
    again, _ = trainer.run([_save("sampled", common_pb2.CHECKPOINT_KIND_SAMPLER, name="v1")])
    assert again["sampled:save"].error.code == "ALREADY_EXISTS"
    replaced = trainer.run_ok(
        [_save("sampled", common_pb2.CHECKPOINT_KIND_SAMPLER, name="v1", overwrite=True)]
    )
    assert replaced["sampled:save"].save_checkpoint.checkpoint.path == info.path


def test_a_save_to_an_unreachable_store_fails_alone_and_keeps_the_adapter():
    with _trainer(f"127.0.0.1:{free_port()}") as (client, app):
        client.run_ok([create("kept", seed=3), create("other", seed=4)])
        before = _losses(client, ["kept"], 1)[0][0]
        results, _ = client.run(
            [
                _save("kept", common_pb2.CHECKPOINT_KIND_STATE),
                forward_backward("other", DATA),
            ]
        )
        assert results["kept:save"].error.code == "UNAVAILABLE"
        assert results["kept:save"].error.category == common_pb2.ERROR_CATEGORY_SERVER
        assert results["other:fb"].HasField("forward_backward")
        assert app.runner is not None and app.runner.engine.adapters["kept"].step == 1
        after = client.run_ok([forward_backward("kept", DATA)])
        assert after["kept:fb"].forward_backward.metrics["loss:sum"] < before


def test_every_torch_op_runs_on_the_thread_that_built_the_engine(monkeypatch, checkpoints):
    """One OpenMP pool per process: a second thread running torch ops (the engine built, or the
    peak measured, elsewhere) makes libgomp sleep at its barriers instead of spinning."""
    threads: dict[str, set[str]] = {}

    def recorded(name, method):
        def record(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.current_thread().name)
            return method(*args, **kwargs)

        monkeypatch.setattr(TrainerEngine, name, record)

    for name in ("__init__", "measure_peak", "create_adapter", "forward_backward", "optim_step"):
        recorded(name, getattr(TrainerEngine, name))
    with _trainer(checkpoints, peak_flops=0) as (client, _):
        client.run_ok([create("threads", seed=5)])
        client.run_ok([forward_backward("threads", DATA), optim_step("threads")])
    assert set(threads) == {"__init__", "measure_peak", "create_adapter", "forward_backward",
                            "optim_step"}  # fmt: skip
    (worker,) = set().union(*threads.values())
    assert worker.startswith("trainer-torch")
