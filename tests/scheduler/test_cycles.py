"""Clock cycles through real processes: the seed's pipelining model, shared cycles and waves,
idempotent retries, holds, and out-of-order arrival — counted from the scheduler's cycle numbers."""

from __future__ import annotations

import time
from typing import Any

import pytest

import treadle
from fixtures.data import token_batch
from fixtures.scheduler import SchedulerFactory
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY, Raw, client


def cycles_per_step(results: list[tuple[Any, Any]]) -> float:
    """Cycles between the first and the last step's optim_step, per step."""
    first, last = results[0][1].cycle, results[-1][1].cycle
    return (last - first) / (len(results) - 1)


def run_steps(raw: Raw, steps: int, pipelined: bool, depth: int = 3) -> list[tuple[Any, Any]]:
    data = token_batch(length=8)
    seq = 0
    pending: list[tuple[Any, Any]] = []
    results = []

    def submit() -> None:
        nonlocal seq
        fb = raw.fb(seq + 1, data)
        opt = raw.optim(seq + 2)
        seq += 2
        pending.append((fb, opt))

    for _ in range(steps if not pipelined else min(depth, steps)):
        if not pipelined:
            fb = raw.fb(seq + 1, data).result(timeout=30)
            opt = raw.optim(seq + 2).result(timeout=30)
            seq += 2
            results.append((fb, opt))
        else:
            submit()
    while pending:
        fb, opt = pending.pop(0)
        results.append((fb.result(timeout=30), opt.result(timeout=30)))
        if seq // 2 < steps:
            submit()
    return results


def test_pipelined_client_gets_a_step_per_cycle_naive_one_per_two(mesh: LocalMesh) -> None:
    with client(mesh.endpoint, mesh.api_key) as service:
        pipelined = service.create_lora_training_client(TINY, rank=4)
        naive = service.create_lora_training_client(TINY, rank=4)
        fast = cycles_per_step(run_steps(Raw(service, pipelined.model_id), 12, pipelined=True))
        slow = cycles_per_step(run_steps(Raw(service, naive.model_id), 12, pipelined=False))
    assert fast <= 1.1, fast
    assert slow >= 2 * fast, (slow, fast)


def test_two_tenants_share_a_cycle_and_a_wave(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(min_cycle_seconds=1.0) as address:
        with client(address, "tml-team-a") as a, client(address, "tml-team-b") as b:
            with client(address, "tml-team-c") as c:
                model_a = a.create_lora_training_client(TINY, rank=4)
                model_b = b.create_lora_training_client(TINY, rank=8)
                model_c = c.create_lora_training_client(TINY, rank=4)
                data = token_batch(length=8)
                Raw(c, model_c.model_id).fb(1, data).result(timeout=30)  # a cycle just started
                ra = Raw(a, model_a.model_id).fb(1, data)
                rb = Raw(b, model_b.model_id).fb(1, token_batch(seed=1, length=12))
                result_a, result_b = ra.result(timeout=30), rb.result(timeout=30)
    assert result_a.cycle == result_b.cycle
    assert result_a.wave == result_b.wave == 0


def test_a_retried_request_runs_once(mesh: LocalMesh) -> None:
    data = token_batch(seed=3)
    with client(mesh.endpoint, mesh.api_key) as service:
        retried = Raw(service, service.create_lora_training_client(TINY, rank=4, seed=7).model_id)
        once = Raw(service, service.create_lora_training_client(TINY, rank=4, seed=7).model_id)
        first, again = retried.fb(1, data), retried.fb(1, data)
        first_result, again_result = first.result(timeout=30), again.result(timeout=30)
        assert first_result.cycle == again_result.cycle
        assert first_result.forward_backward == again_result.forward_backward
        once.fb(1, data).result(timeout=30)
        for raw in (retried, once):
            raw.optim(2, lr=0.05).result(timeout=30)
        after = [raw.fb(3, data).result(timeout=30) for raw in (retried, once)]
        loss = [r.forward_backward.metrics["loss:sum"] for r in after]
        assert loss[0] == pytest.approx(loss[1], rel=1e-6)  # gradient applied once, not twice
        with pytest.raises(treadle.RequestFailedError) as refused:
            retried.fb(1, token_batch(seed=4)).result(timeout=30)
        assert refused.value.code == "INVALID_ARGUMENT" and refused.value.field == "seq_id"


def test_split_batch_arriving_out_of_order_runs_in_seq_order(mesh: LocalMesh) -> None:
    chunks = [token_batch(seed=s) for s in (10, 11, 12)]
    with client(mesh.endpoint, mesh.api_key) as service:
        shuffled = Raw(service, service.create_lora_training_client(TINY, rank=4, seed=1).model_id)
        ordered = Raw(service, service.create_lora_training_client(TINY, rank=4, seed=1).model_id)
        futures = {seq: shuffled.fb(seq, chunks[seq - 1]) for seq in (3, 2)}
        time.sleep(0.3)  # the later chunks wait for the first
        assert not any(f.done() for f in futures.values())
        futures[1] = shuffled.fb(1, chunks[0])
        results = {seq: f.result(timeout=30) for seq, f in futures.items()}
        assert results[1].cycle <= results[2].cycle <= results[3].cycle
        for seq in (1, 2, 3):
            ordered.fb(seq, chunks[seq - 1]).result(timeout=30)
        for raw in (shuffled, ordered):
            raw.optim(4, lr=0.05).result(timeout=30)
        loss = [raw.fb(5, chunks[0]).result(timeout=30) for raw in (shuffled, ordered)]
        assert loss[0].forward_backward.metrics["loss:sum"] == pytest.approx(
            loss[1].forward_backward.metrics["loss:sum"], rel=1e-6
        )


def test_a_missing_predecessor_fails_the_held_request(make_scheduler: SchedulerFactory) -> None:
    with make_scheduler(hold_timeout_seconds=1.0) as address:
        with client(address) as service:
            raw = Raw(service, service.create_lora_training_client(TINY, rank=4).model_id)
            started = time.monotonic()
            with pytest.raises(treadle.RequestFailedError) as failure:
                raw.fb(2, token_batch()).result(timeout=30)
            assert time.monotonic() - started >= 1.0
            assert failure.value.code == "DEADLINE_EXCEEDED"
            assert "seq_id 1" in failure.value.message and failure.value.field == "seq_id"
