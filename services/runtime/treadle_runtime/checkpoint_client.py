"""The client trainer, sampler and scheduler use to store and fetch checkpoints.

Files travel as chunk streams (`chunk_bytes` per message, smaller pieces for small files:
piece_bytes), so a checkpoint of any size passes the gRPC message limit. A received file is
written into one growing buffer whose bytes are returned without a final copy
(io.BytesIO.getvalue), rather than kept as a list of chunks and joined: the chunks' memory is
reused message after message, and the only large allocation is the file itself. Sent chunks are
written as wire bytes directly (wire_bytes.py): building and serializing a chunk message copies
its data twice, which costs as much as the whole hop (docs/benchmarks.md). The channel is
opened lazily inside the running event loop (grpc.aio channels belong to one loop; a client first
used on another loop opens a fresh one). A failed call raises
OpError with the service's status code and message unchanged.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import grpc

from treadle.contract.transport import channel_options
from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2
from treadle_runtime.errors import OpError
from treadle_runtime.wire_bytes import chunk_message


def piece_bytes(size: int, chunk_bytes: int) -> int:
    """Chunk size for streaming a file of `size` bytes: a quarter of the file, at least 64 KiB
    and at most `chunk_bytes`. A small file in a few pieces arrives sooner than in one message,
    which HTTP/2 flow control holds until its window has grown (docs/benchmarks.md)."""
    return max(min(chunk_bytes, size // 4), min(chunk_bytes, 64 << 10))


class CheckpointClient:
    """Put and Get checkpoints on the Checkpoints service at `address` ("host:port")."""

    def __init__(
        self, address: str, *, chunk_bytes: int = 1 << 20, keepalive_seconds: float = 20.0
    ) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes: must be > 0, got {chunk_bytes}")
        self.address = address
        self.chunk_bytes = chunk_bytes
        self.keepalive_seconds = keepalive_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: checkpoints_pb2_grpc.CheckpointsAsyncStub | None = None
        self._put: grpc.aio.StreamUnaryMultiCallable | None = None  # requests as wire bytes
        self._loop: asyncio.AbstractEventLoop | None = None

    def _checkpoints(self) -> checkpoints_pb2_grpc.CheckpointsAsyncStub:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            self._channel = grpc.aio.insecure_channel(
                self.address,
                options=channel_options(self.keepalive_seconds),  # a silent service fails calls
            )
            self._stub = checkpoints_pb2_grpc.CheckpointsStub(self._channel)
            self._put = self._channel.stream_unary(
                "/treadle.v1.Checkpoints/Put",
                request_serializer=None,
                response_deserializer=common_pb2.CheckpointInfo.FromString,
            )
            self._loop = loop
        return self._stub

    def _put_call(self) -> grpc.aio.StreamUnaryMultiCallable:
        """Checkpoints.Put taking requests as wire bytes, on the current loop's channel."""
        self._checkpoints()
        assert self._put is not None
        return self._put

    async def put(
        self,
        tenant: str,
        info: common_pb2.CheckpointInfo,
        files: dict[str, bytes],
        *,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
    ) -> common_pb2.CheckpointInfo:
        """Store `files` as the checkpoint `info.path` of `tenant`; returns its stored metadata."""
        header = checkpoints_pb2.PutHeader(tenant=tenant, overwrite=overwrite)
        header.info.CopyFrom(info)
        if ttl_seconds is not None:
            header.ttl_seconds = ttl_seconds

        async def requests() -> AsyncIterator[bytes]:
            yield checkpoints_pb2.PutRequest(header=header).SerializeToString()
            for name, data in files.items():
                view = memoryview(data).cast("B")  # lengths in bytes, whatever the buffer
                step = piece_bytes(len(view), self.chunk_bytes)
                start = 0
                while True:
                    piece = view[start : start + step]
                    start += len(piece)
                    last = start >= len(view)
                    yield chunk_message(name, piece, last)
                    if last:
                        break

        try:
            reply: common_pb2.CheckpointInfo = await self._put_call()(requests())
        except grpc.aio.AioRpcError as exc:
            raise _op_error(exc) from None
        return reply

    async def get(
        self, tenant: str, path: str
    ) -> tuple[common_pb2.CheckpointInfo, dict[str, bytes]]:
        """The checkpoint at `path` of `tenant`: its metadata and its files (sha256-verified)."""
        request = checkpoints_pb2.GetCheckpointRequest(tenant=tenant, path=path)
        info: common_pb2.CheckpointInfo | None = None
        buffers: dict[str, io.BytesIO] = {}
        complete: set[str] = set()
        try:
            async for response in self._checkpoints().Get(request):
                if response.HasField("info"):
                    info = response.info
                    continue
                chunk = response.chunk
                buffer = buffers.get(chunk.file_name)
                if buffer is None:
                    buffer = buffers[chunk.file_name] = io.BytesIO()
                buffer.write(chunk.data)
                if chunk.last:
                    complete.add(chunk.file_name)
        except grpc.aio.AioRpcError as exc:
            raise _op_error(exc) from None
        unfinished = set(buffers) - complete
        if info is None or unfinished:
            raise OpError(
                grpc.StatusCode.DATA_LOSS,
                f"checkpoint {path} arrived incomplete (unfinished: {sorted(unfinished)})",
            )
        return info, {name: buffer.getvalue() for name, buffer in buffers.items()}

    async def close(self) -> None:
        """Close the channel (the client opens a new one if used again)."""
        channel, self._channel, self._stub, self._loop = self._channel, None, None, None
        self._put = None
        if channel is not None:
            await channel.close(grace=None)


def _op_error(exc: grpc.aio.AioRpcError) -> OpError:
    return OpError(exc.code(), exc.details() or exc.code().name)
