"""Messages written as wire bytes are byte for byte what protobuf would send: plans assembled
from pre-serialized ops (checkpoint chunks: tests/checkpoints/test_checkpoint_client.py)."""

from __future__ import annotations

import pytest

from treadle.v1 import common_pb2, trainer_pb2
from treadle_runtime.wire_bytes import plan_command


def ops(count: int) -> list[trainer_pb2.PlannedOp]:
    fb = common_pb2.ForwardBackwardRequest(loss_fn="cross_entropy")
    datum = fb.data.add()
    datum.model_input.chunks.add().encoded_text.tokens.extend(range(300))
    return [
        trainer_pb2.PlannedOp(op_id=f"m{i}#{i + 1}", model_id=f"m{i}", forward_backward=fb)
        for i in range(count)
    ]


@pytest.mark.parametrize("cycle", [0, 1, 127, 128, 300_000, 2**40])
@pytest.mark.parametrize("count", [1, 2, 130])
def test_plan_bytes_match_the_message(cycle: int, count: int) -> None:
    planned = ops(count)
    raw = plan_command(cycle, [op.SerializeToString() for op in planned])
    message = trainer_pb2.TrainerCommand(plan=trainer_pb2.CyclePlan(cycle=cycle, ops=planned))
    assert raw == message.SerializeToString()
    assert trainer_pb2.TrainerCommand.FromString(raw).plan.ops[-1] == planned[-1]
