"""Residency through a real trainer: with 2 resident adapters at most, five tenants stepping in
turn end bit-identical (weights and optimizer state) to a trainer without a budget, whether idle
adapters wait in host memory or on disk; the resident gauge never exceeds the budget; a wave of
more tenants than the budget runs in several passes with the same results."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from prometheus_client import REGISTRY

from treadle.v1 import trainer_pb2
from treadle_models.lora import LoraSpec
from treadle_trainer.engine import TrainerEngine

from .conftest import (
    MAX_SEQ_LEN,
    TINY,
    CycleClient,
    create,
    datum,
    engine_grads,
    forward_backward,
    optim_step,
    output,
    rel_err,
    serve_engine,
)

rng = np.random.default_rng(7)
TENANTS = [f"tenant-{i}" for i in range(5)]
RANKS = [4, 8, 2, 16, 4]
DATA = {m: [datum(rng.integers(0, 49152, n).tolist()) for n in rng.integers(4, 30, 2)]
        for m in TENANTS}  # fmt: skip
ROUNDS = 2
CREATE = [create(m, rank=r, seed=i) for i, (m, r) in enumerate(zip(TENANTS, RANKS, strict=True))]


def _resident() -> float:
    return REGISTRY.get_sample_value("treadle_trainer_adapters_resident") or 0.0


def _offloads() -> float:
    labels = {"direction": "offload"}
    return REGISTRY.get_sample_value("treadle_trainer_adapter_moves_total", labels) or 0.0


@contextmanager
def _trainer(budget: int, offload: str = "auto") -> Iterator[tuple[TrainerEngine, CycleClient]]:
    engine = TrainerEngine(
        TINY, device="cpu", max_seq_len=MAX_SEQ_LEN, max_resident_adapters=budget, offload=offload
    )
    with serve_engine(engine) as address:
        client = CycleClient(address)
        try:
            yield engine, client
        finally:
            client.close()
            engine.close()


def _in_turn(budget: int, offload: str = "auto") -> dict[str, dict[str, bytes]]:
    """Each tenant's state checkpoint files after ROUNDS rounds of stepping in turn."""
    with _trainer(budget, offload) as (engine, client):
        client.run_ok(CREATE)
        for _ in range(ROUNDS):
            # every tenant's gradient waits (possibly offloaded) while the others run
            for m in TENANTS:
                client.run_ok([forward_backward(m, DATA[m])])
                assert _resident() <= (budget or len(TENANTS))
            for m in TENANTS:
                client.run_ok([optim_step(m, learning_rate=1e-2, weight_decay=0.1)])
                assert _resident() <= (budget or len(TENANTS))
        info = client.stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=10)
        assert info.adapters == len(TENANTS)
        if budget:
            assert engine.residency.high_water == budget
            assert len(engine.residency.offloaded) == len(TENANTS) - budget
        return {m: engine.state_files(m) for m in TENANTS}


@pytest.fixture(scope="module")
def unlimited() -> dict[str, dict[str, bytes]]:
    return _in_turn(budget=0)


@pytest.mark.parametrize("offload", ["disk", "host"])
def test_five_tenants_under_a_budget_of_two_end_bit_identical(unlimited, offload):
    offloads = _offloads()
    limited = _in_turn(budget=2, offload=offload)
    assert _offloads() - offloads >= ROUNDS * len(TENANTS)  # residency really moved adapters
    for m in TENANTS:
        assert limited[m] == unlimited[m], m  # adapter, optimizer moments, step: same bytes


def _one_wave(budget: int) -> tuple[dict, dict, int]:
    with _trainer(budget) as (engine, client):
        client.run_ok(CREATE)
        client.run_ok([forward_backward(m, DATA[m]) for m in TENANTS])
        client.run_ok([optim_step(m, learning_rate=1e-2) for m in TENANTS])
        passes = REGISTRY.get_sample_value("treadle_trainer_pass_rows_count") or 0.0
        results = client.run_ok([forward_backward(m, DATA[m]) for m in TENANTS])
        passes = (REGISTRY.get_sample_value("treadle_trainer_pass_rows_count") or 0.0) - passes
        grads = {}
        for m in TENANTS:
            engine.resident(m)
            grads[m] = engine_grads(engine, m)
        high_water = engine.residency.high_water
    logprobs = {m: output(results[f"{m}:fb"], "logprobs") for m in TENANTS}
    return logprobs, grads, int(passes) * 100 + high_water


def test_a_wave_wider_than_the_budget_runs_in_passes_with_the_same_results():
    lp_one, grads_one, one = _one_wave(budget=0)
    lp_split, grads_split, split = _one_wave(budget=2)
    assert one == 1 * 100 + 5 and split == 3 * 100 + 2  # (passes, most adapters resident)
    for m in TENANTS:
        for got, want in zip(lp_split[m], lp_one[m], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert rel_err(grads_split[m], grads_one[m]) <= 1e-5


def test_released_offloaded_adapters_leave_no_files(tmp_path):
    engine = TrainerEngine(
        TINY, device="cpu", max_resident_adapters=1, offload="disk", offload_dir=str(tmp_path)
    )
    try:
        for i, m in enumerate(TENANTS[:3]):
            engine.create_adapter(m, "t", LoraSpec(rank=RANKS[i]), seed=i)
        assert len(list(tmp_path.iterdir())) == 2 and not engine.adapters[TENANTS[0]].resident
        weights = engine.adapters[TENANTS[0]].params
        assert all(p.numel() == 0 for p in weights.values())  # freed on the device
        engine.release_adapter(TENANTS[0])
        engine.release_adapter(TENANTS[2])  # the resident one
        assert len(list(tmp_path.iterdir())) == 1
        assert engine.resident(TENANTS[1]).params and _resident() == 1
        assert all(p.numel() > 0 for p in engine.adapters[TENANTS[1]].params.values())
    finally:
        engine.close()
    assert not list(tmp_path.iterdir())
