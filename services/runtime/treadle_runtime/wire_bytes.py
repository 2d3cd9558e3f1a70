"""Messages on hot paths written as protobuf wire bytes, without building a message.

- Checkpoint file pieces (`chunk_message`, `data_chunk_message`): building a FileChunk around a
  piece and serializing it copies the piece twice, as costly as the whole gRPC hop between two
  processes (docs/benchmarks.md); writing the few header bytes and joining them with the piece
  copies it once.
- Cycle plans (`plan_command`): a plan is assembled from its ops' bytes, serialized once when each
  request arrived; building it as a message would copy every op into the plan and serialize it
  again while the trainer waits for its next cycle.

The result is byte for byte what SerializeToString gives (fields at their default left out), so
receivers parse it as the message it is. Field numbers come from the generated descriptors.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from treadle.v1 import checkpoints_pb2, trainer_pb2

_LENGTH_DELIMITED, _VARINT = 2, 0


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(message: type[Message], field: str, wire_type: int) -> bytes:
    return varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | wire_type)


_CHUNK = _tag(checkpoints_pb2.PutRequest, "chunk", _LENGTH_DELIMITED)
# a GetCheckpointResponse holds its FileChunk as the same field
assert _CHUNK == _tag(checkpoints_pb2.GetCheckpointResponse, "chunk", _LENGTH_DELIMITED)
_FILE_NAME = _tag(checkpoints_pb2.FileChunk, "file_name", _LENGTH_DELIMITED)
_DATA = _tag(checkpoints_pb2.FileChunk, "data", _LENGTH_DELIMITED)
_LAST = _tag(checkpoints_pb2.FileChunk, "last", _VARINT) + b"\x01"
_EXPORT_DATA = _tag(checkpoints_pb2.DataChunk, "data", _LENGTH_DELIMITED)


def chunk_message(file_name: str, data: bytes | memoryview, last: bool) -> bytes:
    """The wire bytes of a PutRequest, or a GetCheckpointResponse, whose chunk is
    FileChunk(file_name, data, last)."""
    piece = memoryview(data).cast("B")
    name = file_name.encode()
    head = _FILE_NAME + varint(len(name)) + name if name else b""
    if len(piece):
        head += _DATA + varint(len(piece))
    tail = _LAST if last else b""
    size = len(head) + len(piece) + len(tail)
    return b"".join((_CHUNK, varint(size), head, piece, tail))


def data_chunk_message(data: bytes | memoryview) -> bytes:
    """The wire bytes of DataChunk(data=data), an Export piece."""
    piece = memoryview(data).cast("B")
    if not len(piece):
        return b""
    return b"".join((_EXPORT_DATA, varint(len(piece)), piece))


_PLAN = _tag(trainer_pb2.TrainerCommand, "plan", _LENGTH_DELIMITED)
_CYCLE = _tag(trainer_pb2.CyclePlan, "cycle", _VARINT)
_OP = _tag(trainer_pb2.CyclePlan, "ops", _LENGTH_DELIMITED)


def plan_command(cycle: int, ops: Sequence[bytes]) -> bytes:
    """The wire bytes of `TrainerCommand(plan=CyclePlan(cycle=cycle, ops=ops))`, from the ops'
    serialized bytes."""
    parts = [_CYCLE, varint(cycle)] if cycle else []
    for op in ops:
        parts += (_OP, varint(len(op)), op)
    plan = b"".join(parts)
    return b"".join((_PLAN, varint(len(plan)), plan))
