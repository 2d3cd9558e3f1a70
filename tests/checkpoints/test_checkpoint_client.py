"""CheckpointClient, as trainer and sampler use it, against the real service."""

from __future__ import annotations

import asyncio
import io
import os

import grpc
import pytest
from minio import Minio

from checkpoints.conftest import (
    BUCKET,
    Served,
    checkpoints_server,
    get,
    put,
    rpc_error,
    s3_config,
)
from fixtures.s3 import S3Server
from treadle.paths import parse_path
from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2
from treadle_checkpoints.layout import checkpoint_prefix
from treadle_checkpoints.service import add_to_server
from treadle_runtime.checkpoint_client import CheckpointClient, piece_bytes
from treadle_runtime.errors import OpError
from treadle_runtime.wire_bytes import chunk_message, data_chunk_message

FILES = {"adapter_model.safetensors": os.urandom(3_000_000), "adapter_config.json": b"{}"}


def test_put_and_get_round_trip_in_small_chunks(served: Served, tenant: str) -> None:
    client = CheckpointClient(served.address, chunk_bytes=256 * 1024)
    info = common_pb2.CheckpointInfo(path="treadle://run-c/weights/step-3", step=3)

    async def save() -> common_pb2.CheckpointInfo:
        return await client.put(tenant, info, FILES, ttl_seconds=3600)

    async def load() -> tuple[common_pb2.CheckpointInfo, dict[str, bytes]]:
        try:
            return await client.get(tenant, "treadle://run-c/weights/step-3")
        finally:
            await client.close()

    stored = asyncio.run(save())
    loaded, files = asyncio.run(load())  # a second event loop: the client reconnects
    assert files == FILES
    assert loaded == stored and stored.step == 3 and stored.HasField("expires_at")


def test_errors_keep_the_service_code_and_message(served: Served, tenant: str, s3: Minio) -> None:
    client = CheckpointClient(served.address)
    path = "treadle://run-e/weights/x"

    async def scenario() -> list[OpError]:
        caught = []
        await client.put(tenant, common_pb2.CheckpointInfo(path=path), {"w": b"1234"})
        for call in (
            client.get(tenant, "treadle://run-e/weights/missing"),
            client.put(tenant, common_pb2.CheckpointInfo(path=path), {"w": b"again"}),
            client.put(tenant, common_pb2.CheckpointInfo(path="bad"), {"w": b""}),
        ):
            with pytest.raises(OpError) as error:
                await call
            caught.append(error.value)
        key = next(
            o.object_name
            for o in s3.list_objects(
                BUCKET, prefix=checkpoint_prefix(tenant, parse_path(path)), recursive=True
            )
            if o.object_name.endswith("/w")
        )
        s3.put_object(BUCKET, key, io.BytesIO(b"4321"), 4)
        with pytest.raises(OpError) as error:
            await client.get(tenant, path)
        caught.append(error.value)
        await client.close()
        return caught

    missing, exists, malformed, corrupt = asyncio.run(scenario())
    assert missing.code == grpc.StatusCode.NOT_FOUND and "missing" in missing.message
    assert exists.code == grpc.StatusCode.ALREADY_EXISTS
    assert malformed.code == grpc.StatusCode.INVALID_ARGUMENT
    assert malformed.message.startswith("info.path")
    assert corrupt.code == grpc.StatusCode.DATA_LOSS and "/w" in corrupt.message


def test_files_far_larger_than_the_message_limit_pass_in_chunks(
    s3_server: S3Server, tenant: str
) -> None:
    config = s3_config(s3_server, max_message_bytes=1 << 20, chunk_bytes=256 * 1024)
    big = {"adapter_model.safetensors": os.urandom(6 << 20)}  # six times the limit
    info = common_pb2.CheckpointInfo(path="treadle://run-big/weights/w")
    with checkpoints_server(config) as small:

        async def round_trip() -> dict[str, bytes]:
            client = CheckpointClient(small.address, chunk_bytes=256 * 1024)
            try:
                await client.put(tenant, info, big)
                return (await client.get(tenant, info.path))[1]
            finally:
                await client.close()

        assert asyncio.run(round_trip()) == big
        one_message = rpc_error(  # the limit is real: the same bytes unchunked are refused
            lambda: put(small.stub, tenant, "treadle://run-big/weights/x", big, chunk_bytes=6 << 20)
        )
    assert one_message.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_small_file_comes_back_in_a_few_pieces(served: Served, tenant: str) -> None:
    """The service sends a 1 MB file as four messages (they arrive sooner than one 1 MB message
    held back by HTTP/2 flow control) and a 6 MB one in whole 1 MiB chunks."""
    for size, messages in ((1_000_000, 4), (6_000_000, 6)):
        files = {"a.bin": os.urandom(size)}
        put(served.stub, tenant, f"treadle://run-p/weights/s{size}", files)
        _, got, sent = get(served.stub, tenant, f"treadle://run-p/weights/s{size}")
        assert got == files and sent == messages


@pytest.mark.parametrize(
    ("size", "configured", "piece"),
    [
        (100 << 20, 1 << 20, 1 << 20),  # large files: the configured chunk
        (1_000_000, 1 << 20, 250_000),  # small ones: a quarter each
        (10_000, 1 << 20, 64 << 10),  # tiny ones: one piece of 64 KiB
        (10_000, 4096, 4096),  # never over the configured chunk
    ],
)
def test_small_files_are_sent_in_a_few_pieces(size: int, configured: int, piece: int) -> None:
    assert piece_bytes(size, configured) == piece


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_384, (1 << 21) - 40, 1 << 21])
@pytest.mark.parametrize("name", ["adapter_model.safetensors", "é" * 70, ""])
@pytest.mark.parametrize("last", [False, True])
def test_a_chunk_written_as_wire_bytes_is_the_serialized_message(
    size: int, name: str, last: bool
) -> None:
    data = os.urandom(size)
    message = checkpoints_pb2.PutRequest(
        chunk=checkpoints_pb2.FileChunk(file_name=name, data=data, last=last)
    )
    wire = chunk_message(name, memoryview(data), last)
    assert wire == message.SerializeToString()
    assert checkpoints_pb2.GetCheckpointResponse.FromString(wire).chunk == message.chunk
    export = checkpoints_pb2.DataChunk(data=data).SerializeToString()
    assert data_chunk_message(memoryview(data)) == export


class _Recorded:
    """A server that keeps what is registered on it."""

    def __init__(self) -> None:
        self.generic: list[object] = []
        self.registered: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: tuple[object, ...]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.registered = handlers


def test_the_servicer_is_registered_with_every_method_and_gets_pieces_through() -> None:
    server = _Recorded()
    add_to_server(checkpoints_pb2_grpc.CheckpointsServicer(), server)  # type: ignore[arg-type]
    assert set(server.registered) == {"Put", "Get", "List", "Delete", "SetTtl", "Export"}
    assert len(server.generic) == 1
    get = server.registered["Get"].response_serializer
    assert get is not None
    wire = chunk_message("f", b"data", True)
    assert get(wire) is wire  # wire bytes go out as they are
    info = checkpoints_pb2.GetCheckpointResponse(info=common_pb2.CheckpointInfo(path="p"))
    assert get(info) == info.SerializeToString()


def test_a_registration_missing_methods_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def generic_only(servicer: object, server: _Recorded) -> None:
        server.add_generic_rpc_handlers(())

    monkeypatch.setattr(checkpoints_pb2_grpc, "add_CheckpointsServicer_to_server", generic_only)
    with pytest.raises(RuntimeError, match="not every method"):
        add_to_server(checkpoints_pb2_grpc.CheckpointsServicer(), _Recorded())  # type: ignore[arg-type]
