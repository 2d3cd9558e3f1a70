"""RunCycles on a real trainer: waves, one batched pass over mixed adapters that matches
independent single-adapter references, training progress, and isolation between models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY

from .conftest import (
    create,
    datum,
    engine_grads,
    forward_backward,
    optim_step,
    output,
    reference_grads,
    reference_logprobs,
    reference_model,
    reference_weights,
    rel_err,
    release,
)

rng = np.random.default_rng(0)
SEQS_A = [rng.integers(0, 49152, n).tolist() for n in (13, 8)]
SEQS_B = [rng.integers(0, 49152, n).tolist() for n in (16, 5, 11)]
ADAM = {"learning_rate": 1e-2, "eps": 1e-2}
# four tenants: rank, alpha, LoRA switches, batch (different sizes and lengths)
TENANTS = {
    "t2": (2, 4.0, {}, [rng.integers(0, 49152, n).tolist() for n in (13, 8)]),
    "t4": (4, 4.0, {"train_mlp": False}, [rng.integers(0, 49152, n).tolist() for n in (16, 5, 11)]),
    "t8": (8, 32.0, {"train_attn": False}, [rng.integers(0, 49152, n).tolist() for n in (21,)]),
    "t16": (16, 8.0, {"train_unembed": False},
            [rng.integers(0, 49152, n).tolist() for n in (3, 9, 14, 6)]),
}  # fmt: skip


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _weights(trainer, model_id: str) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.engine.adapters[model_id].params.items()}


def test_four_tenants_in_one_wave_match_training_each_alone_with_plain_peft(trainer):
    client = trainer.client
    client.run_ok(
        [create(m, rank=r, seed=i, alpha=a, **lora) for i, (m, (r, a, lora, _)) in
         enumerate(TENANTS.items())]
    )  # fmt: skip
    initial = {m: _weights(trainer, m) for m in TENANTS}
    passes = _sample("treadle_trainer_pass_rows_count")

    def wave(tag: str) -> dict:
        plan = [forward_backward(m, [datum(s) for s in t[3]], op_id=f"{m}:{tag}")
                for m, t in TENANTS.items()]  # fmt: skip
        results, done = client.run(plan)
        assert {results[f"{m}:{tag}"].wave for m in TENANTS} == {0} and done.waves == 1
        assert done.tokens == sum(len(s) - 1 for t in TENANTS.values() for s in t[3])
        return results

    first = wave("fb1")
    assert _sample("treadle_trainer_pass_rows_count") == passes + 1  # one batched pass
    first_grads = {m: engine_grads(trainer.engine, m) for m in TENANTS}
    client.run_ok([optim_step(m, **ADAM) for m in TENANTS])
    stepped = {m: _weights(trainer, m) for m in TENANTS}
    second = wave("fb2")
    for seed, (model_id, (rank, alpha, lora, seqs)) in enumerate(TENANTS.items()):
        ref = reference_model(rank, seed, alpha=alpha, **lora)
        assert rel_err(initial[model_id], reference_weights(ref)) == 0.0
        adam = torch.optim.AdamW(
            [p for p in ref.parameters() if p.requires_grad],
            lr=1e-2, betas=(0.9, 0.95), eps=1e-2, weight_decay=0.0, foreach=False,
        )  # fmt: skip
        for step, results in enumerate((first, second)):
            result = results[f"{model_id}:fb{step + 1}"]
            lps = [reference_logprobs(ref, s) for s in seqs]
            loss = -sum(lp.sum() for lp in lps)
            metric = result.forward_backward.metrics["loss:sum"]
            assert metric == pytest.approx(float(loss.detach()), rel=1e-5)
            for got, want in zip(output(result, "logprobs"), lps, strict=True):
                np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)
            for got, want in zip(output(result, "elementwise_loss"), lps, strict=True):
                np.testing.assert_allclose(got, -want.detach().numpy(), rtol=1e-5, atol=1e-5)
            loss.backward()
            want = reference_grads(ref)
            assert all(g.any() for g in want.values()) or step == 0  # (B = 0 zeroes dA first)
            got = first_grads[model_id] if step == 0 else engine_grads(trainer.engine, model_id)
            assert rel_err(got, want) <= 1e-5, (model_id, step)
            if step == 0:
                adam.step()
                adam.zero_grad()
                after = reference_weights(ref)
                assert rel_err(stepped[model_id], after) <= 1e-5
                update = {k: stepped[model_id][k] - initial[model_id][k] for k in after}
                want_update = {k: after[k] - initial[model_id][k] for k in after}
                assert rel_err(update, want_update) <= 1e-4


def test_ten_cycles_of_training_lower_the_loss(trainer):
    client = trainer.client
    client.run_ok([create("learner", rank=8, seed=3)])
    data = [datum(s) for s in SEQS_B]
    losses = []
    for _ in range(10):
        results = client.run_ok(
            [forward_backward("learner", data), optim_step("learner", learning_rate=1e-2)]
        )
        losses.append(results["learner:fb"].forward_backward.metrics["loss:sum"])
        assert results["learner:optim"].optim_step.metrics["step:max"] == len(losses)
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[-1] < 0.7 * losses[0]


def test_a_step_of_one_model_leaves_another_bit_identical(trainer):
    client = trainer.client
    client.run_ok([create("iso-a", seed=1), create("iso-b", seed=2)])
    both = [
        forward_backward("iso-a", [datum(s) for s in SEQS_A]),
        forward_backward("iso-b", [datum(s) for s in SEQS_B]),
    ]
    client.run_ok([*both, optim_step("iso-a", **ADAM), optim_step("iso-b", **ADAM)])
    client.run_ok(both)
    b = trainer.engine.adapters["iso-b"]
    before = {k: t.clone() for k, t in b.tensors().items()}  # weights, grads, Adam moments
    assert any(k.startswith("grad:") for k in before) and b.step == 1
    a_before = _weights(trainer, "iso-a")
    client.run_ok([optim_step("iso-a", **ADAM)])
    after = b.tensors()
    assert set(after) == set(before) and b.step == 1
    assert all(torch.equal(after[k], t) for k, t in before.items())
    a_after = _weights(trainer, "iso-a")
    assert all(not torch.equal(a_after[k], w) for k, w in a_before.items())


def test_waves_keep_each_models_order_and_stream_results_wave_by_wave(trainer):
    client = trainer.client
    client.run_ok([create("w-a", seed=4), create("w-b", seed=5)])
    data = [datum(s) for s in SEQS_A]
    plan = [
        forward_backward("w-a", data, op_id="a-fb1"),
        optim_step("w-a", op_id="a-step", learning_rate=5e-2),
        forward_backward("w-a", data, op_id="a-fb2"),
        forward_backward("w-b", data, op_id="b-fb"),
    ]
    results, done = client.run(plan)
    assert {k: r.wave for k, r in results.items()} == {
        "a-fb1": 0, "b-fb": 0, "a-step": 1, "a-fb2": 2
    }  # fmt: skip
    waves = [e.op_result.wave for e in client.events if e.HasField("op_result")]
    assert waves == sorted(waves) and client.events[-1].HasField("cycle_done")
    assert done.waves == 3 and done.busy_seconds > 0
    fb1 = results["a-fb1"].forward_backward.metrics["loss:sum"]
    fb2 = results["a-fb2"].forward_backward.metrics["loss:sum"]
    assert fb2 < fb1  # the step between them was applied
    assert results["b-fb"].forward_backward.metrics["loss:sum"] == fb1  # same init, same data


def test_an_op_before_its_adapter_exists_fails_not_found_and_release_removes_it(trainer):
    client = trainer.client
    data = [datum(SEQS_A[0])]
    results, _ = client.run([forward_backward("late", data), create("late")])
    assert results["late:fb"].error.code == "NOT_FOUND"
    assert results["late:fb"].error.field == "model_id"
    assert not results["late:create"].HasField("error")
    assert results["late:create"].create_adapter.trainable_params > 0
    again, _ = client.run([create("late")])
    assert again["late:create"].error.code == "ALREADY_EXISTS"
    client.run_ok([forward_backward("late", data), release("late")])
    gone, _ = client.run([forward_backward("late", data)])
    assert gone["late:fb"].error.code == "NOT_FOUND"
    assert "late" not in trainer.engine.adapters


def test_forward_only_returns_logprobs_without_accumulating_gradient(trainer):
    client = trainer.client
    client.run_ok([create("fwd", seed=6), create("fwd-train", seed=6)])
    data = [datum(s) for s in SEQS_B]
    results = client.run_ok(
        [
            forward_backward("fwd", data, forward_only=True, op_id="fwd"),
            forward_backward("fwd-train", data, op_id="train"),
        ]
    )
    assert not engine_grads(trainer.engine, "fwd") or all(
        not g.any() for g in engine_grads(trainer.engine, "fwd").values()
    )
    assert engine_grads(trainer.engine, "fwd-train")
    for got, want in zip(
        output(results["fwd"], "logprobs"), output(results["train"], "logprobs"), strict=True
    ):
        np.testing.assert_array_equal(got, want)
