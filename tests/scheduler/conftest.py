"""An in-process scheduler with its own settings, in front of the session mesh's real trainer,
sampler and checkpoints processes, plus helpers that submit raw requests and read cycle numbers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

import treadle
from fixtures.grpc_server import running_server
from treadle import types, wire
from treadle.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from treadle_runtime.auth import ApiKeyInterceptor, ApiKeys
from treadle_runtime.launcher import LocalMesh
from treadle_scheduler.config import SchedulerConfig
from treadle_scheduler.service import TreadleService

KEYS = {"tml-team-a": "team-a", "tml-team-b": "team-b", "tml-team-c": "team-c"}
TINY = "treadle/tiny-llama"

SchedulerFactory = Callable[..., Any]


def peers(mesh: LocalMesh) -> dict[str, str]:
    """Scheduler flags pointing at the mesh's trainer, sampler and checkpoints processes."""

    def addresses(prefix: str) -> str:
        return ",".join(s.address for s in mesh.services if s.name.startswith(prefix))

    return {
        "trainers": addresses("trainer"),
        "samplers": addresses("sampler"),
        "checkpoints": addresses("checkpoints"),
    }


@contextmanager
def scheduler(mesh: LocalMesh, **settings: Any) -> Iterator[str]:
    """A real scheduler server in this process; yields its address."""
    config = SchedulerConfig(**{**peers(mesh), **settings})
    keys = ApiKeys(KEYS)
    service = TreadleService(config, keys)

    async def setup(server: grpc.aio.Server) -> list[str]:
        scheduler_pb2_grpc.add_TreadleServicer_to_server(service, server)
        await service.start()
        return ["treadle.v1.Treadle"]

    with running_server(
        setup, interceptors=[ApiKeyInterceptor(keys)], config=config, on_shutdown=service.stop
    ) as address:
        wait_for_trainers(address)
        yield address


def wait_for_trainers(address: str, timeout: float = 30.0) -> None:
    """Block until the scheduler lists a served model."""
    import time

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.TreadleStub(channel)
        while time.monotonic() < deadline:
            caps = stub.GetCapabilities(
                scheduler_pb2.GetCapabilitiesRequest(), metadata=(("x-api-key", "tml-team-a"),)
            )
            if caps.models:
                return
            time.sleep(0.1)
    raise TimeoutError("scheduler never reached a trainer")


@pytest.fixture()
def make_scheduler(mesh: LocalMesh) -> Iterator[SchedulerFactory]:
    """`with make_scheduler(min_cycle_seconds=0.5) as address:` — a scheduler with settings."""

    def factory(**settings: Any) -> Any:
        return scheduler(mesh, **settings)

    yield factory


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

        def build(request_id: str) -> scheduler_pb2.Submit:
            return scheduler_pb2.Submit(
                request_id=request_id, model_id=self.model_id, seq_id=seq_id, **op
            )

        return self.service.connection.submit(build)

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
