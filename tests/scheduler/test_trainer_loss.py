"""A trainer killed mid-run, or gone silent mid-cycle: its futures fail UNAVAILABLE with a way
out, other base models' tenants carry on, and a restarted (or reachable again) trainer takes new
models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import treadle
from fixtures.data import token_batch
from fixtures.mesh import extra_mesh
from fixtures.proxy import cuttable_proxy
from fixtures.scheduler import scheduler, wait_for_trainers
from treadle import types
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY, assert_failed_with_lost_trainer

LLAMA, QWEN = "treadle/tiny-llama", "treadle/tiny-qwen2"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    with extra_mesh(tmp_path_factory, "two-models", base_model=f"{LLAMA},{QWEN}") as running:
        yield running


def wait_until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.2)


def test_killed_trainer_fails_its_futures_and_comes_back(
    two_models: LocalMesh, tmp_path: Path
) -> None:
    data = token_batch(datums=4, length=64)
    adam = types.AdamParams(learning_rate=1e-3)
    with treadle.ServiceClient(base_url=two_models.endpoint, api_key=two_models.api_key) as mine:
        with treadle.ServiceClient(base_url=two_models.endpoint, api_key="tml-other") as other:
            victim = mine.create_lora_training_client(LLAMA, rank=4)
            survivor = other.create_lora_training_client(QWEN, rank=4)
            victim.forward_backward(data).result(timeout=30)
            in_flight = [victim.forward_backward(data) for _ in range(30)]
            two_models.kill("trainer-0")
            assert_failed_with_lost_trainer(in_flight)
            with pytest.raises(treadle.RequestFailedError) as lost:
                victim.optim_step(adam).result(timeout=30)
            assert lost.value.code == "UNAVAILABLE"

            for _ in range(3):  # the other base model's tenant is untouched
                survivor.forward_backward(data).result(timeout=30)
                survivor.optim_step(adam).result(timeout=30)

            two_models.restart("trainer-0")
            wait_until(
                lambda: (
                    LLAMA in [m.model_name for m in mine.get_server_capabilities().supported_models]
                )
            )
            fresh = mine.create_lora_training_client(LLAMA, rank=4)
            assert fresh.forward_backward(data).result(timeout=30).metrics["loss:sum"] > 0


def test_a_trainer_gone_silent_mid_cycle_is_lost_and_its_requests_fail(mesh: LocalMesh) -> None:
    """The trainer's connection stays open and drops every byte (a node lost without a reset):
    keepalive (every 6 s, 3 s to answer) notices, the in-flight requests fail with UNAVAILABLE
    instead of hanging, and the link reconnects to the trainer for new models."""
    trainer = next(s for s in mesh.services if s.name.startswith("trainer"))
    with cuttable_proxy(trainer.address) as proxy:
        with scheduler(mesh, trainers=proxy.address, peer_keepalive_seconds=6) as address:
            with treadle.ServiceClient(base_url=address, api_key="tml-team-a") as service:
                model = service.create_lora_training_client(TINY, rank=4)
                data = token_batch(datums=2, length=32)
                assert model.forward_backward(data).result(timeout=60).metrics["loss:sum"] > 0
                doomed = [model.forward_backward(data) for _ in range(20)]
                proxy.freeze()
                started = time.monotonic()
                assert_failed_with_lost_trainer(doomed, timeout=30)
                assert time.monotonic() - started < 20
                wait_for_trainers(address)  # the link reconnects (a fresh connection)
                again = service.create_lora_training_client(TINY, rank=4)
                assert again.forward_backward(data).result(timeout=60).metrics["loss:sum"] > 0
                assert proxy.connections >= 2
