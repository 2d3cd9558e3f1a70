"""Capabilities say what the trainers run: a trainer that runs fewer losses than the table has
reports them, the scheduler passes them on per model and together, and its door refuses the
others naming `loss_fn`, before any cycle."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

import treadle
from fixtures.data import token_batch
from fixtures.grpc_server import running_server
from treadle.contract.losses import CROSS_ENTROPY, IMPORTANCE_SAMPLING, PPO
from treadle.v1 import scheduler_pb2, scheduler_pb2_grpc
from treadle_runtime.auth import ApiKeys
from treadle_scheduler.app import SchedulerApp
from treadle_scheduler.config import SchedulerConfig

from .conftest import TINY, Raw, fb_request, trainer_in_process

RUNS = (CROSS_ENTROPY, PPO)


@pytest.fixture(scope="module")
def narrow_trainer() -> Iterator[str]:
    """A trainer that runs cross_entropy and ppo only."""
    with trainer_in_process(loss_fns=RUNS) as (address, _):
        yield address


def test_capabilities_and_the_door_follow_what_the_trainer_runs(narrow_trainer: str) -> None:
    config = SchedulerConfig(trainers=narrow_trainer)
    keys = ApiKeys({"tml-caps": "caps"})
    with running_server(SchedulerApp(config, keys), config=config) as address:
        with treadle.ServiceClient(base_url=address, api_key="tml-caps") as service:
            caps = service.get_server_capabilities()
            while not caps.supported_models:  # until the scheduler has reached the trainer
                caps = service.get_server_capabilities()
            assert [m.loss_fns for m in caps.supported_models] == [list(RUNS)]
            assert caps.loss_fns == list(RUNS)
            training = service.create_lora_training_client(TINY, rank=4)
            assert training.forward_backward(token_batch(), CROSS_ENTROPY).result(timeout=30)
            request = fb_request(token_batch())
            request.loss_fn = IMPORTANCE_SAMPLING  # a loss in the table the trainer does not run
            with pytest.raises(treadle.RequestFailedError) as refused:
                Raw(service, training.model_id).submit(2, forward_backward=request).result(30)
            assert refused.value.code == "INVALID_ARGUMENT"
            assert refused.value.field == "loss_fn"
            assert "accepted: cross_entropy, ppo" in refused.value.message


def test_with_no_trainer_connected_no_loss_is_offered() -> None:
    config = SchedulerConfig(trainers="127.0.0.1:1")
    keys = ApiKeys({"tml-caps": "caps"})
    with running_server(SchedulerApp(config, keys), config=config) as address:
        with grpc.insecure_channel(address) as channel:
            stub = scheduler_pb2_grpc.TreadleStub(channel)
            caps = stub.GetCapabilities(
                scheduler_pb2.GetCapabilitiesRequest(), metadata=(("x-api-key", "tml-caps"),)
            )
    assert not caps.models and not caps.loss_fns
