"""Cycle plans on the wire, built from ops serialized once, when each request arrived.

A `TrainerCommand{plan: CyclePlan{cycle, ops}}` is, in protobuf's wire format, a length-delimited
field 1 holding a varint field 1 (the cycle) followed by one length-delimited field 2 per op, so
a plan is assembled by concatenating each op's bytes. Building it as a message instead would copy
every op into the plan and serialize it again while the trainer waits for its next cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

PLAN = 0x0A  # TrainerCommand.plan: field 1, length-delimited
CYCLE = 0x08  # CyclePlan.cycle: field 1, varint
OP = 0x12  # CyclePlan.ops: field 2, length-delimited


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_plan(cycle: int, ops: Sequence[bytes]) -> bytes:
    """The serialized `TrainerCommand` carrying `CyclePlan(cycle=cycle, ops=ops)`."""
    parts = [bytes((CYCLE,)), varint(cycle)]
    for op in ops:
        parts += (bytes((OP,)), varint(len(op)), op)
    plan = b"".join(parts)
    return b"".join((bytes((PLAN,)), varint(len(plan)), plan))
