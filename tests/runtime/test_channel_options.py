"""Channels between services: replies up to the services' message limit arrive (a plain gRPC
client refuses anything over 4 MiB), and keepalive is on."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from fixtures.grpc_server import ServicersApp, running_server
from treadle.contract.transport import channel_options, keepalive_options
from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2

BIG = 5 << 20  # over gRPC's default 4 MiB receive limit, under the services' 64 MiB


class _Listing(checkpoints_pb2_grpc.CheckpointsServicer):
    """A List whose one checkpoint carries BIG bytes of metadata."""

    async def List(
        self, request: object, context: object
    ) -> checkpoints_pb2.ListCheckpointsResponse:
        info = common_pb2.CheckpointInfo(path="treadle://run/weights/big", renderer_name="x" * BIG)
        return checkpoints_pb2.ListCheckpointsResponse(checkpoints=[info])


async def _list(address: str, options: list[tuple[str, int]]) -> int:
    async with grpc.aio.insecure_channel(address, options) as channel:
        reply = await checkpoints_pb2_grpc.CheckpointsStub(channel).List(
            checkpoints_pb2.ListCheckpointsRequest(tenant="t"), timeout=30
        )
        return len(reply.checkpoints[0].renderer_name)


def test_a_reply_over_4_mib_passes_between_services() -> None:
    def register(server: grpc.aio.Server) -> list[str]:
        checkpoints_pb2_grpc.add_CheckpointsServicer_to_server(_Listing(), server)
        return ["treadle.v1.Checkpoints"]

    with running_server(ServicersApp(register)) as address:
        assert asyncio.run(_list(address, channel_options(20))) == BIG
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # keepalive alone: gRPC's limit
            asyncio.run(_list(address, keepalive_options(20)))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("grpc.keepalive_time_ms", 20000) in channel_options(20)
