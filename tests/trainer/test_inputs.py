"""Bad inputs fail only their own op, with the code and field a user can act on, while a good
op of another model in the same wave succeeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from treadle import tensors
from treadle.v1 import common_pb2, trainer_pb2

from .conftest import (
    MAX_SEQ_LEN,
    TINY,
    VOCAB,
    create,
    datum,
    forward_backward,
    model_input,
    optim_step,
)

GOOD = [1, 5, 9, 200, 3000, 42]


def _with(d: common_pb2.Datum, name: str, tensor: common_pb2.Tensor) -> common_pb2.Datum:
    d.loss_fn_inputs[name].CopyFrom(tensor)
    return d


def _without(d: common_pb2.Datum, name: str) -> common_pb2.Datum:
    del d.loss_fn_inputs[name]
    return d


NAN = [1.0, float("nan"), 1.0, 1.0, 1.0]
INF = [0.5, 0.5, float("inf"), 0.5, 0.5]
OK_RL = {"logprobs": [-1.0] * 5, "advantages": [1.0] * 5}
FB_CASES = {
    "empty data": ([], "cross_entropy", {}, "data"),
    "token id at vocab size": (
        [datum(GOOD), datum([1, 2, VOCAB, 4])], "cross_entropy", {}, "data[1].model_input"
    ),
    "negative token id": ([datum([1, -3, 4])], "cross_entropy", {}, "data[0].model_input"),
    "target id out of range": (
        [_with(datum(GOOD), "target_tokens", tensors.encode(np.array([1, 2, 3, 4, VOCAB + 5])))],
        "cross_entropy", {}, "data[0].loss_fn_inputs.target_tokens",
    ),
    "targets shorter than input": (
        [datum(GOOD), _with(datum(GOOD), "target_tokens", tensors.encode(np.array([1, 2, 3])))],
        "cross_entropy", {}, "data[1].loss_fn_inputs.target_tokens",
    ),
    "missing target_tokens": (
        [_without(datum(GOOD), "target_tokens")], "cross_entropy", {},
        "data[0].loss_fn_inputs.target_tokens",
    ),
    "NaN weight": ([datum(GOOD, weights=NAN)], "cross_entropy", {},
                   "data[0].loss_fn_inputs.weights"),
    "inf advantage": ([datum(GOOD, logprobs=[-1.0] * 5, advantages=INF)], "ppo", {},
                      "data[0].loss_fn_inputs.advantages"),
    "inf weight": ([datum(GOOD, weights=INF)], "cross_entropy", {},
                   "data[0].loss_fn_inputs.weights"),
    "NaN advantage": ([datum(GOOD, logprobs=[-1.0] * 5, advantages=NAN)], "cispo", {},
                      "data[0].loss_fn_inputs.advantages"),
    "-inf sampler logprob": ([datum(GOOD, logprobs=[-float("inf")] * 5, advantages=[1.0] * 5)],
                             "ppo", {}, "data[0].loss_fn_inputs.logprobs"),
    "NaN sampler logprob": ([datum(GOOD, logprobs=NAN, advantages=[1.0] * 5)],
                            "importance_sampling", {}, "data[0].loss_fn_inputs.logprobs"),
    "missing advantages": ([datum(GOOD, logprobs=[-1.0] * 5)], "cispo", {},
                           "data[0].loss_fn_inputs.advantages"),
    "unknown input name": ([datum(GOOD, mask=[1.0] * 5)], "cross_entropy", {},
                           "data[0].loss_fn_inputs.mask"),
    "missing logprobs for gspo": ([datum(GOOD, advantages=[1.0] * 5)], "gspo", {},
                                  "data[0].loss_fn_inputs.logprobs"),
    "missing advantages for stable_reinforce": (
        [datum(GOOD, logprobs=[-1.0] * 5)], "stable_reinforce", {},
        "data[0].loss_fn_inputs.advantages",
    ),
    "NaN per-token clip_low_threshold": (
        [datum(GOOD, **OK_RL, clip_low_threshold=NAN)], "gspo", {},
        "data[0].loss_fn_inputs.clip_low_threshold",
    ),
    "inf per-token clip_high_threshold": (
        [datum(GOOD, **OK_RL, clip_high_threshold=INF)], "stable_reinforce", {},
        "data[0].loss_fn_inputs.clip_high_threshold",
    ),
    "sequence_ratio_mask shorter than input": (
        [datum(GOOD, **OK_RL, sequence_ratio_mask=[1.0] * 4)], "gspo", {},
        "data[0].loss_fn_inputs.sequence_ratio_mask",
    ),
    "int64 sequence_ratio_mask": (
        [_with(datum(GOOD, **OK_RL), "sequence_ratio_mask",
               tensors.encode(np.ones(5, np.int64)))], "gspo", {},
        "data[0].loss_fn_inputs.sequence_ratio_mask",
    ),
    "per-token clip low above the config's high": (
        [datum(GOOD, **OK_RL, clip_low_threshold=[0.9, 0.9, 1.3, 0.9, 0.9])], "ppo",
        {"clip_high_threshold": 1.2}, "data[0].loss_fn_inputs.clip_low_threshold",
    ),
    "unknown config key for gspo": ([datum(GOOD, **OK_RL)], "gspo", {"beta": 0.1},
                                    "loss_fn_config.beta"),
    "unknown loss": ([datum(GOOD)], "dpo", {}, "loss_fn"),
    "unknown config key": ([datum(GOOD, **OK_RL)], "ppo", {"temperature": 1.0},
                           "loss_fn_config.temperature"),
    "dro without beta": ([datum(GOOD, **OK_RL)], "dro", {}, "loss_fn_config.beta"),
    "clip low above high": ([datum(GOOD, **OK_RL)], "ppo",
                            {"clip_low_threshold": 1.5, "clip_high_threshold": 1.2},
                            "loss_fn_config.clip_low_threshold"),
    "longer than max_seq_len": ([datum(list(range(MAX_SEQ_LEN + 2)))], "cross_entropy", {},
                                "data[0].model_input"),
    "empty model input": (
        [common_pb2.Datum(model_input=model_input([]),
                          loss_fn_inputs={"target_tokens": tensors.encode(np.zeros(0, np.int64))})],
        "cross_entropy", {}, "data[0].model_input",
    ),
    "tensor bytes do not match its shape": (
        [_with(datum(GOOD), "target_tokens",
               common_pb2.Tensor(dtype=common_pb2.DTYPE_INT64, shape=[5], data=b"\x00" * 7))],
        "cross_entropy", {}, "data[0].loss_fn_inputs.target_tokens",
    ),
    "tensor without dtype": (
        [_with(datum(GOOD), "weights", common_pb2.Tensor(shape=[5], data=b"\x00" * 20))],
        "cross_entropy", {}, "data[0].loss_fn_inputs.weights",
    ),
    "float target tokens": (
        [_with(datum(GOOD), "target_tokens", tensors.encode(np.ones(5, np.float32)))],
        "cross_entropy", {}, "data[0].loss_fn_inputs.target_tokens",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def models(trainer):
    trainer.client.run_ok([create("good", seed=1), create("bad", seed=2)])
    return trainer


def _assert_only_bad_fails(results, code: str, field: str) -> None:
    bad, good = results["bad"], results["good"]
    assert bad.error.code == code, bad.error
    assert bad.error.field == field
    assert bad.error.message.startswith(field) or code != "INVALID_ARGUMENT"
    assert bad.error.category == common_pb2.ERROR_CATEGORY_USER
    assert good.HasField("forward_backward"), good.error
    assert good.forward_backward.metrics["loss:sum"] > 0


@pytest.mark.parametrize("case", FB_CASES, ids=list(FB_CASES))
def test_bad_forward_backward_fails_alone(models, case):
    data, loss_fn, config, field = FB_CASES[case]
    results, done = models.client.run(
        [
            forward_backward("good", [datum(GOOD)], op_id="good"),
            forward_backward("bad", data, loss_fn, op_id="bad", **config),
        ]
    )
    _assert_only_bad_fails(results, "INVALID_ARGUMENT", field)
    assert done.tokens == len(GOOD) - 1
    assert models.engine.adapters["bad"].params  # the bad model is still there


def _planned(model_id: str, op_id: str, **op: object) -> trainer_pb2.PlannedOp:
    return trainer_pb2.PlannedOp(op_id=op_id, model_id=model_id, **op)


OTHER_CASES = {
    "unknown model": (
        forward_backward("nobody", [datum(GOOD)], op_id="bad"), "NOT_FOUND", "model_id"
    ),
    "optim_step of unknown model": (optim_step("nobody", op_id="bad"), "NOT_FOUND", "model_id"),
    "beta2 of 1": (optim_step("bad", op_id="bad", beta2=1.0), "INVALID_ARGUMENT",
                   "adam_params.beta2"),
    "negative learning rate": (optim_step("bad", op_id="bad", learning_rate=-1.0),
                               "INVALID_ARGUMENT", "adam_params.learning_rate"),
    "other base model": (
        _planned("new", "bad", create_adapter=trainer_pb2.CreateAdapterOp(
            tenant="t", base_model="treadle/tiny-qwen2",
            lora_config=common_pb2.LoraConfig(rank=4))),
        "INVALID_ARGUMENT", "base_model",
    ),
    "unsupported rank": (
        _planned("new", "bad", create_adapter=trainer_pb2.CreateAdapterOp(
            tenant="t", base_model=TINY, lora_config=common_pb2.LoraConfig(rank=3))),
        "INVALID_ARGUMENT", "lora_config.rank",
    ),
    "no adapted modules": (
        _planned("new", "bad", create_adapter=trainer_pb2.CreateAdapterOp(
            tenant="t", base_model=TINY, lora_config=common_pb2.LoraConfig(
                rank=4, train_attn=False, train_mlp=False, train_unembed=False))),
        "INVALID_ARGUMENT", "lora_config",
    ),
    "sampler path to load_state": (
        _planned("bad", "bad", load_state=common_pb2.LoadStateRequest(
            path="treadle://bad/sampler_weights/x")),
        "INVALID_ARGUMENT", "path",
    ),
    "save with a bad name": (
        _planned("bad", "bad", save_checkpoint=common_pb2.SaveCheckpointRequest(
            name="../up", kind=common_pb2.CHECKPOINT_KIND_STATE)),
        "INVALID_ARGUMENT", "name",
    ),
    "op naming no operation": (_planned("bad", "bad"), "INVALID_ARGUMENT", "op"),
}  # fmt: skip


@pytest.mark.parametrize("case", OTHER_CASES, ids=list(OTHER_CASES))
def test_bad_op_fails_alone(models, case):
    op, code, field = OTHER_CASES[case]
    results, _ = models.client.run([forward_backward("good", [datum(GOOD)], op_id="good"), op])
    _assert_only_bad_fails(results, code, field)
    assert "new" not in models.engine.adapters


def test_a_loss_that_overflows_fails_alone_and_leaves_no_gradient(models):
    params = models.engine.adapters["bad"].params

    def grads() -> dict[str, torch.Tensor]:
        return {k: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for k, p in params.items()}  # fmt: skip

    before = grads()
    huge = datum(GOOD, logprobs=[-1e4] * 5, advantages=[1.0] * 5)
    results, _ = models.client.run(
        [
            forward_backward("good", [datum(GOOD)], op_id="good"),
            forward_backward("bad", [huge], "importance_sampling", op_id="bad"),
        ]
    )
    _assert_only_bad_fails(results, "INVALID_ARGUMENT", "data")
    assert "not finite" in results["bad"].error.message
    after = grads()
    assert all(torch.equal(after[k], g) for k, g in before.items())
