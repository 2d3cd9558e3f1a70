"""Deficit round robin between tenants: shares by tokens, order within a model, nothing starves."""

from __future__ import annotations

import asyncio

from treadle.v1 import trainer_pb2
from treadle_scheduler.fairness import FairQueue
from treadle_scheduler.models import Request


def request(tenant: str, model: str, seq: int, tokens: int) -> Request:
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    loop.close()
    op = trainer_pb2.PlannedOp(op_id=f"{model}#{seq}", model_id=model)
    return Request(model_id=model, seq_id=seq, op=op, outcome=future, tenant=tenant, tokens=tokens)


def test_backlog_does_not_crowd_out_a_small_tenant() -> None:
    queue = FairQueue()
    for seq in range(1, 21):
        queue.push("big", request("big", "big:0", seq, 100))
    queue.push("small", request("small", "small:0", 1, 100))
    taken = queue.take(budget=400)
    assert sum(r.tokens for r in taken) <= 400
    assert any(r.tenant == "small" for r in taken)
    assert [r.seq_id for r in taken if r.tenant == "big"] == [1, 2, 3]


def test_shares_are_equal_by_tokens_over_cycles() -> None:
    queue = FairQueue()
    for seq in range(1, 501):  # both tenants keep a backlog throughout
        queue.push("a", request("a", "a:0", seq, 10))
        queue.push("b", request("b", "b:0", seq, 50))
    served = {"a": 0, "b": 0}
    for _ in range(20):
        for r in queue.take(budget=200):
            served[r.tenant] += r.tokens
    assert abs(served["a"] - served["b"]) <= 100, served


def test_order_within_a_model_and_free_ops_ride_along() -> None:
    queue = FairQueue()
    queue.push("a", request("a", "a:0", 1, 300))
    queue.push("a", request("a", "a:0", 2, 0))  # optim_step costs no tokens
    queue.push("a", request("a", "a:0", 3, 300))
    first = queue.take(budget=300)
    assert [r.seq_id for r in first] == [1, 2]
    assert [r.seq_id for r in queue.take(budget=300)] == [3]
    assert len(queue) == 0


def test_a_request_over_the_budget_runs_alone() -> None:
    queue = FairQueue()
    queue.push("a", request("a", "a:0", 1, 5000))
    queue.push("b", request("b", "b:0", 1, 10))
    first = queue.take(budget=1000)
    second = queue.take(budget=1000)
    assert len(first) == 1 and len(second) == 1
    assert {first[0].tenant, second[0].tenant} == {"a", "b"}
