"""An in-process scheduler with its own settings, in front of the session mesh's real trainer,
sampler and checkpoints processes, plus helpers that submit raw requests and read cycle numbers,
and a trainer served in this process for tests that shape or watch it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

import treadle
from fixtures.grpc_server import ServicersApp, running_server
from treadle import types, wire
from treadle.v1 import common_pb2, scheduler_pb2, trainer_pb2_grpc
from treadle_scheduler.config import SchedulerConfig
from treadle_trainer.app import SERVICE_NAME
from treadle_trainer.config import TrainerConfig
from treadle_trainer.cycle import CycleRunner
from treadle_trainer.engine import TrainerEngine
from treadle_trainer.service import TrainerServicer

TINY = "treadle/tiny-llama"


@contextmanager
def trainer_in_process(**runner: Any) -> Iterator[tuple[str, CycleRunner]]:
    """A real trainer server on tiny-llama in this process (CycleRunner options in `runner`);
    yields its address and runner."""
    engine = TrainerEngine(TINY, device="cpu", max_seq_len=64)
    cycles = CycleRunner(engine, None, **runner)

    def register(server: grpc.aio.Server) -> list[str]:
        trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(cycles), server)
        return [SERVICE_NAME]

    with running_server(ServicersApp(register), service="trainer", config=TrainerConfig()) as at:
        yield at, cycles


def fb_request(data: list[types.Datum]) -> common_pb2.ForwardBackwardRequest:
    """A cross_entropy forward_backward message for `data`."""
    return common_pb2.ForwardBackwardRequest(
        data=wire.datums_to_proto(data, "cross_entropy"), loss_fn="cross_entropy"
    )


class Raw:
    """Raw Submits on a client's session, with explicit seq_ids, returning Result messages."""

    def __init__(self, service: treadle.ServiceClient, model_id: str) -> None:
        self.service = service
        self.model_id = model_id

    def submit(self, seq_id: int, **op: Any) -> Any:
        """Submit one op (`forward_backward=...` or `optim_step=...`); a future of its Result."""

        submit = scheduler_pb2.Submit(model_id=self.model_id, seq_id=seq_id, **op)
        return self.service.connection.submit(submit)

    def fb(self, seq_id: int, data: list[types.Datum]) -> Any:
        """A forward_backward."""
        return self.submit(seq_id, forward_backward=fb_request(data))

    def optim(self, seq_id: int, lr: float = 1e-3) -> Any:
        """An optim_step."""
        adam = common_pb2.AdamParams(learning_rate=lr)
        return self.submit(seq_id, optim_step=common_pb2.OptimStepRequest(adam_params=adam))


def client(address: str, key: str = "tml-team-a", **kwargs: Any) -> treadle.ServiceClient:
    """An SDK client of the scheduler at `address`."""
    return treadle.ServiceClient(base_url=address, api_key=key, **kwargs)


def replace(config: SchedulerConfig, **changes: Any) -> SchedulerConfig:
    """A copy of a config with changes."""
    return dataclasses.replace(config, **changes)


def assert_failed_with_lost_trainer(futures: list[Any], timeout: float = 60) -> None:
    """Some of `futures` were in flight on a trainer that died: those fail with UNAVAILABLE and
    tell the client to resume from its last state checkpoint (the others may have finished)."""
    failures = []
    for future in futures:
        try:
            future.result(timeout=timeout)
        except treadle.RequestFailedError as exc:
            failures.append(exc)
    assert failures, "nothing was in flight when the trainer died"
    assert all(f.code == "UNAVAILABLE" for f in failures), failures
    assert all("resume from your last state checkpoint" in f.message for f in failures)
