"""Opening a session stream: a write that gRPC's core loses on a connection that had just ended
("Internal error from Core", INTERNAL) is retried, so the client gets the scheduler's own answer;
a refusal fails the opening at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from treadle.errors import RequestFailedError
from treadle.session_stream import LOCAL_TRANSPORT_FAILURE, SessionStream
from treadle.v1 import scheduler_pb2_grpc


class Refusing(scheduler_pb2_grpc.TreadleServicer):
    """Ends the first `lost` Session calls as gRPC's core reports a lost write, then refuses."""

    def __init__(self, lost: int) -> None:
        self.lost = lost
        self.calls = 0

    async def Session(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        self.calls += 1
        if self.calls <= self.lost:
            await context.abort(grpc.StatusCode.INTERNAL, LOCAL_TRANSPORT_FAILURE)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "x-api-key: unknown API key")
        yield  # a stream handler


async def open_against(servicer: Refusing, attempts: int) -> RequestFailedError:
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_TreadleServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = SessionStream(
                channel,
                (("x-api-key", "tml-nobody"),),
                client_version="test",
                heartbeat_seconds=None,
                reconnect_attempts=attempts,
            )
            with pytest.raises(RequestFailedError) as refused:
                await asyncio.wait_for(stream.open(), 30)
            return refused.value
    finally:
        await server.stop(None)


def test_a_lost_write_while_opening_is_retried_and_the_refusal_comes_through() -> None:
    servicer = Refusing(lost=2)
    refused = asyncio.run(open_against(servicer, attempts=5))
    assert refused.code == "UNAUTHENTICATED" and servicer.calls == 3


def test_a_refusal_fails_the_opening_at_once_and_retries_are_bounded() -> None:
    servicer = Refusing(lost=0)
    assert asyncio.run(open_against(servicer, attempts=5)).code == "UNAUTHENTICATED"
    assert servicer.calls == 1
    servicer = Refusing(lost=10)
    assert asyncio.run(open_against(servicer, attempts=1)).code == "INTERNAL"
    assert servicer.calls == 2
