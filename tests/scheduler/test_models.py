"""Per-model ordering: strict seq_id order, holds, and idempotent retries (unit level)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from treadle.v1 import common_pb2, trainer_pb2
from treadle_runtime.errors import OpError
from treadle_scheduler.models import ModelRecord, Request, payload_digest


def record() -> ModelRecord:
    return ModelRecord("m", "t", "s", "base", common_pb2.LoraConfig(rank=4), trainer=None)  # type: ignore[arg-type]


def request(seq: int, lr: float = 1e-3) -> Request:
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    loop.close()
    op = trainer_pb2.PlannedOp(op_id=f"m#{seq}", model_id="m")
    op.optim_step.adam_params.learning_rate = lr
    return Request(
        model_id="m", seq_id=seq, op=op, outcome=future, tenant="t", digest=payload_digest(op)
    )


def test_requests_are_released_in_seq_order() -> None:
    model = record()
    assert model.admit(request(2))[1] == []  # held: 1 has not arrived
    third = request(3)
    assert model.admit(third)[1] == []
    first = request(1)
    answer, ready = model.admit(first)
    assert answer is first
    assert [r.seq_id for r in ready] == [1, 2, 3]


def test_a_retry_is_the_same_request_and_a_different_payload_is_refused() -> None:
    model = record()
    original = request(1)
    model.admit(original)
    answer, ready = model.admit(request(1))
    assert answer is original and ready == []
    with pytest.raises(OpError) as refused:
        model.admit(request(1, lr=0.5))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.field == "seq_id"


def test_held_requests_expire() -> None:
    model = record()
    held = request(5)
    model.admit(held)
    assert model.expire_held(older_than=held.enqueued_at + 1) == [held]
    assert not model.held
