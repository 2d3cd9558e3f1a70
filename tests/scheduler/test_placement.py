"""A model's placement on a trainer ends with its creation when nobody waits for it: a client
that gives up on CreateModel while the creation is queued behind other work leaves no adapter on
the trainer and no model counted on its link."""

from __future__ import annotations

import time

import grpc
import pytest

import treadle
from fixtures.data import token_batch
from fixtures.grpc_server import running_server
from treadle.v1 import common_pb2, scheduler_pb2
from treadle_runtime.auth import ApiKeys
from treadle_scheduler.app import SchedulerApp
from treadle_scheduler.config import SchedulerConfig

from .conftest import TINY, trainer_in_process


def test_an_abandoned_creation_is_undone_once_the_trainer_has_made_it() -> None:
    with trainer_in_process() as (trainer, runner):
        config = SchedulerConfig(trainers=trainer)
        app = SchedulerApp(config, ApiKeys({"tml-p": "p"}))
        with running_server(app, config=config) as address:
            with treadle.ServiceClient(base_url=address, api_key="tml-p") as service:
                while not service.get_server_capabilities().supported_models:
                    time.sleep(0.05)
                busy = service.create_lora_training_client(TINY, rank=4)
                work = [busy.forward_backward(token_batch(datums=8, length=60)) for _ in range(6)]
                request = scheduler_pb2.CreateModelRequest(
                    session_id=service.session_id,
                    base_model=TINY,
                    lora_config=common_pb2.LoraConfig(rank=4),
                )
                with pytest.raises(treadle.RequestFailedError) as gave_up:
                    service.connection.unary("CreateModel", request, timeout=0.2).result()
                assert gave_up.value.code == grpc.StatusCode.DEADLINE_EXCEEDED.name
                for future in work:
                    future.result(timeout=120)
                link = app.service.trainers[0]
                deadline = time.monotonic() + 30
                while link.load()[0] > 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert link.load()[0] == 1  # the busy model only
                busy.forward(token_batch()).result(timeout=30)  # a cycle runs the release
                assert len(runner.engine.adapters) == 1
