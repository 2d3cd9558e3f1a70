"""Resuming across trainers: a state saved by a `python -m treadle_trainer` process, which is then
killed, continues bit-identically in a new trainer when loaded with its optimizer, and restarts
the optimizer when loaded as weights only."""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from trainer.conftest import MAX_SEQ_LEN, TINY, CycleClient, create, datum, forward_backward
from trainer.conftest import optim_step as optim

from checkpoints.conftest import Served, get, service_process
from fixtures.grpc_server import running_server
from treadle.v1 import common_pb2, trainer_pb2
from treadle_trainer.app import TrainerApp
from treadle_trainer.config import TrainerConfig

DATA = [datum(list(range(100, 124))), datum(list(range(7, 19)))]
LR = 1e-2
STATE, SAMPLER = common_pb2.CHECKPOINT_KIND_STATE, common_pb2.CHECKPOINT_KIND_SAMPLER


def _step(client: CycleClient, model_id: str) -> None:
    client.run_ok([forward_backward(model_id, DATA), optim(model_id, learning_rate=LR)])


def _save(client: CycleClient, model_id: str, kind: int, name: str) -> str:
    op = trainer_pb2.PlannedOp(
        op_id=f"{model_id}:save",
        model_id=model_id,
        save_checkpoint=common_pb2.SaveCheckpointRequest(name=name, kind=kind),
    )
    return client.run_ok([op])[f"{model_id}:save"].save_checkpoint.checkpoint.path


def _weights(served: Served, tenant: str, path: str) -> dict[str, torch.Tensor]:
    return load_safetensors(get(served.stub, tenant, path)[1]["adapter_model.safetensors"])


def _create(model_id: str, tenant: str, **fields: object) -> trainer_pb2.PlannedOp:
    op = create(model_id, rank=8, seed=5)
    op.create_adapter.tenant = tenant
    for key, value in fields.items():
        setattr(op.create_adapter, key, value)
    return op


def _fraction_moved_by_lr(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """Share of the changed weights that moved by exactly the learning rate, as Adam's first
    step from zero moments does (m̂ = g, v̂ = g², so |Δ| = lr)."""
    delta = torch.cat([(after[k] - before[k]).abs().flatten() for k in before])
    moved = delta[delta != 0]
    return float(((moved - LR).abs() <= 1e-3 * LR).float().mean())


def test_a_killed_trainer_resumes_bit_identically_in_a_new_trainer(
    served: Served, tenant: str
) -> None:
    flags: dict[str, Any] = {
        "base_model": TINY, "device": "cpu", "max_seq_len": MAX_SEQ_LEN,
        "checkpoints": served.address,
    }  # fmt: skip
    with service_process("treadle_trainer", **flags) as first:
        client = CycleClient(first.address)
        client.run_ok([_create("run", tenant)])
        _step(client, "run")
        _step(client, "run")
        state = _save(client, "run", STATE, "mid")
        _step(client, "run")
        uninterrupted = _save(client, "run", SAMPLER, "uninterrupted")
        client.close()
        first.kill()  # its adapters, gradients and moments die with it

    config = TrainerConfig(**flags)  # a new trainer, here in the test process
    app = TrainerApp(config)
    with running_server(app, service="trainer", config=config) as second:
        client = CycleClient(second)
        resumed = client.run_ok(
            [_create("resumed", tenant, from_state_path=state, load_optimizer=True)]
        )
        assert resumed["resumed:create"].create_adapter.step == 2
        _step(client, "resumed")
        continued = _save(client, "resumed", SAMPLER, "continued")

        client.run_ok([_create("weights-only", tenant, seed=77)])
        load = common_pb2.LoadStateRequest(path=state, load_optimizer=False)
        loaded = client.run_ok(
            [trainer_pb2.PlannedOp(op_id="w:load", model_id="weights-only", load_state=load)]
        )
        assert loaded["w:load"].load_state.step == 0  # the optimizer starts over
        _step(client, "weights-only")
        restarted = _save(client, "weights-only", SAMPLER, "restarted")
        client.close()

    want = _weights(served, tenant, uninterrupted)
    got = _weights(served, tenant, continued)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)

    at_save = _weights(served, tenant, state)
    assert _fraction_moved_by_lr(at_save, _weights(served, tenant, restarted)) > 0.99
    assert _fraction_moved_by_lr(at_save, got) < 0.5  # kept moments: not a first step
