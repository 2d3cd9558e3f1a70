"""The object store going down under a running mesh: saves and loads fail UNAVAILABLE with a
message saying so, the trainer keeps every adapter in memory, and the same save succeeds once
the store is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from trainer.conftest import MAX_SEQ_LEN, TINY, CycleClient, create, datum, forward_backward
from trainer.conftest import optim_step as optim

from checkpoints.conftest import checkpoints_server, s3_config
from fixtures.grpc_server import free_port, running_server
from treadle.v1 import common_pb2, trainer_pb2
from treadle_runtime.seaweed import S3Server, start_s3_server
from treadle_trainer.app import TrainerApp
from treadle_trainer.config import TrainerConfig

DATA = [datum(list(range(30, 50)))]
STATE, SAMPLER = common_pb2.CHECKPOINT_KIND_STATE, common_pb2.CHECKPOINT_KIND_SAMPLER


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server of this test alone, on a fixed port so it can come back at the same place."""
    server = start_s3_server(tmp_path / "s3", s3_port=free_port())
    try:
        yield server
    finally:
        server.stop()


def _save(model_id: str, kind: int, name: str) -> trainer_pb2.PlannedOp:
    request = common_pb2.SaveCheckpointRequest(name=name, kind=kind)
    return trainer_pb2.PlannedOp(
        op_id=f"{model_id}:save", model_id=model_id, save_checkpoint=request
    )


def _load(model_id: str, path: str) -> trainer_pb2.PlannedOp:
    request = common_pb2.LoadStateRequest(path=path, load_optimizer=True)
    return trainer_pb2.PlannedOp(op_id=f"{model_id}:load", model_id=model_id, load_state=request)


def _retry_until_stored(
    client: CycleClient, save: trainer_pb2.PlannedOp
) -> common_pb2.CheckpointInfo:
    """What a caller does after UNAVAILABLE: the same save again, until the store answers
    (a restarted store may take a moment before it accepts writes)."""
    deadline = time.monotonic() + 30
    while True:
        results, _ = client.run([save])
        result = results[save.op_id]
        if not result.HasField("error"):
            return result.save_checkpoint.checkpoint
        assert result.error.code == "UNAVAILABLE", result.error
        assert time.monotonic() < deadline, result.error
        time.sleep(0.5)


def test_store_down_fails_saves_unavailable_and_a_retry_succeeds(
    own_s3: S3Server, tmp_path: Path
) -> None:
    config = s3_config(own_s3, s3_timeout_seconds=2)
    with checkpoints_server(config) as checkpoints:
        trainer_config = TrainerConfig(
            base_model=TINY, device="cpu", max_seq_len=MAX_SEQ_LEN, checkpoints=checkpoints.address
        )
        app = TrainerApp(trainer_config)
        with running_server(app, service="trainer", config=trainer_config) as address:
            client = CycleClient(address)
            client.run_ok([create("kept", seed=1)])
            client.run_ok([forward_backward("kept", DATA), optim("kept", learning_rate=1e-2)])
            saved = client.run_ok([_save("kept", STATE, "before")])
            before = saved["kept:save"].save_checkpoint.checkpoint.path

            own_s3.stop()
            results, _ = client.run([_save("kept", STATE, "during")])
            error = results["kept:save"].error
            assert (
                error.code == "UNAVAILABLE" and error.category == common_pb2.ERROR_CATEGORY_SERVER
            )
            assert "object store unreachable" in error.message
            results, _ = client.run([_load("kept", before)])
            assert results["kept:load"].error.code == "UNAVAILABLE"
            client.run_ok([forward_backward("kept", DATA), optim("kept", learning_rate=1e-2)])
            assert app.runner is not None and app.runner.engine.adapters["kept"].step == 2

            restarted = start_s3_server(
                tmp_path / "s3",
                secret_key=own_s3.secret_key,
                s3_port=int(own_s3.endpoint.rsplit(":", 1)[1]),
            )
            try:
                during = _retry_until_stored(client, _save("kept", STATE, "during"))
                assert during.step == 2
                client.run_ok([create("copy", seed=9)])
                assert client.run_ok([_load("copy", during.path)])["copy:load"].load_state.step == 2
                files = [
                    client.run_ok([_save(m, SAMPLER, f"{m}-now")])[f"{m}:save"]
                    for m in ("kept", "copy")
                ]
                assert files[0].save_checkpoint.checkpoint.sha256 == (
                    files[1].save_checkpoint.checkpoint.sha256
                )  # the same adapter bytes: nothing was lost to the outage
            finally:
                client.close()
                restarted.stop()
