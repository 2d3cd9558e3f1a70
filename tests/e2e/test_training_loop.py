"""The whole path through real processes: SDK -> scheduler -> trainer/sampler/checkpoints -> S3."""

from __future__ import annotations

import itertools

import pytest

import treadle
from fixtures.data import token_batch
from treadle import types
from treadle.v1 import common_pb2, scheduler_pb2
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY


def test_pipelined_training_sampling_and_resume(mesh: LocalMesh) -> None:
    service = treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key)
    training = service.create_lora_training_client(base_model=TINY, rank=8, seed=0)
    batch = token_batch()
    adam = types.AdamParams(learning_rate=5e-3)

    # 20 steps, each submitted before the previous one is awaited
    pending = [(training.forward_backward(batch), training.optim_step(adam))]
    losses = []
    for step in range(20):
        if step + 1 < 20:
            pending.append((training.forward_backward(batch), training.optim_step(adam)))
        fb, opt = pending.pop(0)
        losses.append(fb.result(timeout=60).metrics["loss:sum"])
        assert opt.result(timeout=60).metrics
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(b < a for a, b in itertools.pairwise(losses[:6])), losses

    sampler = training.save_weights_and_get_sampling_client()
    response = sampler.sample(
        batch[0].model_input,
        num_samples=2,
        sampling_params=types.SamplingParams(max_tokens=8, seed=1),
    ).result(timeout=60)
    assert len(response.sequences) == 2
    assert all(len(s.tokens) > 0 for s in response.sequences)
    assert response.weights_version == sampler.model_path

    state = training.save_state("resume-here").result(timeout=60)
    assert state.path.startswith("treadle://") and "/weights/resume-here" in state.path
    expected = training.forward_backward(batch).result(timeout=60).metrics["loss:sum"]

    resumed = service.create_training_client_from_state_with_optimizer(state.path)
    assert resumed.model_id != training.model_id
    continued = resumed.forward_backward(batch).result(timeout=60).metrics["loss:sum"]
    assert continued == pytest.approx(expected, rel=1e-5)
    service.close()


def test_a_model_created_from_state_keeps_the_renderer_name(mesh: LocalMesh) -> None:
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
        training = service.create_lora_training_client(
            base_model=TINY, rank=4, user_metadata={"renderer_name": "chatml"}
        )
        path = training.save_state("with-renderer").result().path
        resumed = service.create_training_client_from_state(path)
        assert resumed.renderer_name == "chatml"
        again = resumed.save_state("resumed").result().path
        info = service.create_rest_client().get_weights_info(again).result()
        assert info.renderer_name == "chatml"


def test_unknown_base_model_names_it(mesh: LocalMesh) -> None:
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
        with pytest.raises(treadle.RequestFailedError) as failure:
            service.create_lora_training_client(base_model="no/such-model", rank=8)
        assert failure.value.code == "INVALID_ARGUMENT"
        assert "base_model" in failure.value.message and "no/such-model" in failure.value.message


def test_unknown_loss_is_refused_by_client_and_server(mesh: LocalMesh) -> None:
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
        training = service.create_lora_training_client(base_model=TINY, rank=4)
        with pytest.raises(treadle.ValidationError, match="loss_fn"):
            training.forward_backward(token_batch(), loss_fn="hinge")
        # the same request sent raw, past the client's own check
        request = common_pb2.ForwardBackwardRequest(loss_fn="hinge")
        request.data.add().model_input.chunks.add().encoded_text.tokens.extend([1, 2, 3])

        submit = scheduler_pb2.Submit(
            model_id=training.model_id, seq_id=1, forward_backward=request
        )
        with pytest.raises(treadle.RequestFailedError) as failure:
            service.connection.submit(submit).result(timeout=30)
        assert failure.value.code == "INVALID_ARGUMENT"
        assert failure.value.field == "loss_fn" and "hinge" in failure.value.message


def test_wrong_api_key_is_unauthenticated(mesh: LocalMesh) -> None:
    with pytest.raises(treadle.RequestFailedError) as failure:
        treadle.ServiceClient(base_url=mesh.endpoint, api_key="tml-wrong")
    assert failure.value.code == "UNAUTHENTICATED"
