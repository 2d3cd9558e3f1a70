"""State and sampler checkpoint files: resuming in a new trainer continues bit-identically, and
sampler files are a PEFT adapter that peft itself loads with the same outputs."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import torch
from peft import PeftModel

from treadle.v1 import common_pb2
from treadle_models import load_model
from treadle_models.adapter_files import write_adapter_dir
from treadle_models.lora import LoraSpec
from treadle_runtime.errors import OpError
from treadle_trainer.engine import TrainerEngine
from treadle_trainer.inputs import parse_forward_backward
from treadle_trainer.optim import AdamConfig
from treadle_trainer.state_files import decode_state

from .conftest import TINY, datum

SPEC = LoraSpec(rank=8, alpha=16.0)
rng = np.random.default_rng(2)
SEQS = [rng.integers(0, 49152, n).tolist() for n in (10, 14)]
BATCH = parse_forward_backward(
    common_pb2.ForwardBackwardRequest(data=[datum(s) for s in SEQS], loss_fn="cross_entropy"),
    49152,
    2048,
)
ADAM = AdamConfig(learning_rate=1e-2)


def _engine() -> TrainerEngine:
    return TrainerEngine(TINY, device="cpu")


def _train(engine: TrainerEngine, model_id: str, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        losses.append(engine.forward_backward([(model_id, BATCH)])[0].metrics["loss:sum"])
        engine.optim_step(model_id, ADAM)
    return losses


def _weights(engine: TrainerEngine, model_id: str) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in engine.adapters[model_id].params.items()}


@pytest.fixture(scope="module")
def trained() -> TrainerEngine:
    engine = _engine()
    engine.create_adapter("run", "tenant-a", SPEC, seed=9)
    _train(engine, "run", 3)
    return engine


def test_resume_with_optimizer_in_a_new_trainer_continues_bit_identically(trained):
    files = trained.state_files("run")
    assert set(files) == {
        "adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors",
        "trainer_state.json",
    }  # fmt: skip
    assert json.loads(files["trainer_state.json"])["step"] == 3
    fresh = _engine()
    fresh.create_adapter("resumed", "tenant-a", SPEC, seed=123)  # the seed is overwritten
    assert fresh.load_state("resumed", decode_state(files), load_optimizer=True) == 3
    assert _train(fresh, "resumed", 2) == _train(trained, "run", 2)
    resumed, original = _weights(fresh, "resumed"), _weights(trained, "run")
    assert all(torch.equal(resumed[k], w) for k, w in original.items())
    assert fresh.adapters["resumed"].step == trained.adapters["run"].step == 5


def test_load_without_optimizer_resets_the_step_and_moments(trained):
    fresh = _engine()
    fresh.create_adapter("weights-only", "tenant-a", SPEC, seed=1)
    step = fresh.load_state("weights-only", decode_state(trained.state_files("run")), False)
    adapter = fresh.adapters["weights-only"]
    assert step == 0 and adapter.step == 0
    assert all(not t.any() for t in adapter.adam.tensors().values())
    assert all(torch.equal(p, trained.adapters["run"].params[k]) for k, p in adapter.params.items())


def test_a_checkpoint_of_another_lora_config_is_refused_and_nothing_changes(trained):
    fresh = _engine()
    fresh.create_adapter("other", "tenant-a", LoraSpec(rank=4, alpha=4.0), seed=1)
    before = _weights(fresh, "other")
    with pytest.raises(OpError) as failure:
        fresh.load_state("other", decode_state(trained.state_files("run")), True)
    assert failure.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "LoRA config" in failure.value.message
    assert all(torch.equal(p, before[k]) for k, p in _weights(fresh, "other").items())


def test_sampler_files_load_in_peft_with_the_trainers_outputs(trained, tmp_path):
    files = trained.sampler_files("run")
    assert set(files) == {"adapter_model.safetensors", "adapter_config.json"}
    folder = write_adapter_dir(files, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(load_model(TINY), folder)
    peft_model.eval()
    ids = torch.tensor([SEQS[1][:-1]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
    result = trained.forward_backward([("run", BATCH)])[0]
    target = torch.tensor(SEQS[1][1:])
    got_lp = torch.log_softmax(want[0], -1).gather(1, target[:, None])[:, 0]
    np.testing.assert_allclose(result.logprobs[1], got_lp.numpy(), rtol=1e-5, atol=1e-5)
    config = json.loads(files["adapter_config.json"])
    assert config["r"] == 8 and config["lora_alpha"] == 16.0
    assert config["base_model_name_or_path"] == TINY
    for param in trained.adapters["run"].params.values():  # leave no gradient behind
        param.grad = None
