"""Two trainer processes serving one base model: adapters are placed on both (sticky, balanced by
load), each model's ops run on its own trainer with the same results either trainer would give,
and killing one trainer fails only its models' requests while the other trainer's models go on."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

import treadle
from fixtures.data import token_batch
from fixtures.mesh import extra_mesh
from treadle import types
from treadle.v1 import trainer_pb2, trainer_pb2_grpc
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY, assert_failed_with_lost_trainer


@pytest.fixture(scope="module")
def two_trainers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    with extra_mesh(tmp_path_factory, "two-trainers", trainers=2) as running:
        yield running


def adapters(mesh: LocalMesh) -> dict[str, int]:
    """Adapters each trainer process holds, by service name, asked of the trainers themselves."""
    held = {}
    for name in ("trainer-0", "trainer-1"):
        with grpc.insecure_channel(mesh.service(name).address) as channel:
            info = trainer_pb2_grpc.TrainerStub(channel).GetTrainerInfo(
                trainer_pb2.GetTrainerInfoRequest(), timeout=10
            )
        held[name] = info.adapters
    return held


def test_models_spread_over_both_trainers_and_survive_the_other_ones_loss(
    two_trainers: LocalMesh,
) -> None:
    data = token_batch(datums=2, length=32)
    adam = types.AdamParams(learning_rate=0.05)
    placed: dict[str, list[treadle.TrainingClient]] = {"trainer-0": [], "trainer-1": []}
    with treadle.ServiceClient(base_url=two_trainers.endpoint, api_key=two_trainers.api_key) as a:
        with treadle.ServiceClient(base_url=two_trainers.endpoint, api_key="tml-other") as b:
            for service in (a, b, a, b):  # same seed everywhere: the same model, wherever it runs
                before = adapters(two_trainers)
                model = service.create_lora_training_client(TINY, rank=4, seed=11)
                after = adapters(two_trainers)
                (home,) = [name for name in after if after[name] == before[name] + 1]
                placed[home].append(model)
            assert [len(models) for models in placed.values()] == [2, 2]  # balanced by load

            models = placed["trainer-0"] + placed["trainer-1"]
            for _ in range(2):  # every model trains on its own trainer and gets the same numbers
                futures = [m.forward_backward(data) for m in models]
                steps = [m.optim_step(adam) for m in models]
                losses = [f.result(timeout=60).metrics["loss:sum"] for f in futures]
                for step in steps:
                    step.result(timeout=60)
                assert losses == pytest.approx([losses[0]] * 4, rel=1e-4)
            assert adapters(two_trainers) == {"trainer-0": 2, "trainer-1": 2}  # sticky

            doomed = [m.forward_backward(data) for m in placed["trainer-0"] for _ in range(10)]
            spared = [m.forward_backward(data) for m in placed["trainer-1"] for _ in range(3)]
            two_trainers.kill("trainer-0")
            assert_failed_with_lost_trainer(doomed)
            for future in spared:
                assert future.result(timeout=60).metrics["loss:sum"] > 0
            for model in placed["trainer-0"]:
                with pytest.raises(treadle.RequestFailedError) as lost:
                    model.forward_backward(data).result(timeout=60)
                assert lost.value.code == "UNAVAILABLE"
            for model in placed["trainer-1"]:
                model.optim_step(adam).result(timeout=60)
                assert model.forward_backward(data).result(timeout=60).metrics["loss:sum"] > 0
            again = a.create_lora_training_client(TINY, rank=4)  # placed on the trainer left
            assert again.forward_backward(data).result(timeout=60).metrics["loss:sum"] > 0
