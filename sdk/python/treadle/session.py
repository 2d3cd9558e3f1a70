"""The SDK's one connection to the scheduler: a session stream run by a background thread.

Calls from any thread hand Submit messages to the session (session_stream.py), which runs on the
connection's own event loop, and get a concurrent future back. A heartbeat goes out every few
seconds from that loop, so a training loop busy in its own code keeps its session, and keepalive
pings notice a connection that died without a word; the session reconnects and re-sends what is
unanswered, and once it is over for good every waiting and later request fails with the reason.

A script that ends without close() still ends its session cleanly: live connections are closed
at interpreter exit (atexit, through weak references), so no task of the loop is left pending.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc

from treadle import __version__
from treadle.contract import transport
from treadle.errors import RequestFailedError
from treadle.session_stream import SessionStream, rpc_failure
from treadle.v1 import scheduler_pb2, scheduler_pb2_grpc

T = TypeVar("T")


class Connection:
    """A session with the scheduler and the thread that serves it."""

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        heartbeat_seconds: float = 5.0,
        reconnect_attempts: int = 20,
        connect_timeout: float = 30.0,
        keepalive_seconds: float = 20.0,
        keepalive_timeout: float = 10.0,
    ) -> None:
        # refused here, naming the field, rather than by the scheduler's first ping
        self.channel_options = transport.channel_options(keepalive_seconds, keepalive_timeout)
        self.target = target
        self.metadata = (("x-api-key", api_key),)
        self.heartbeat_seconds = heartbeat_seconds
        self.reconnect_attempts = reconnect_attempts
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="treadle-session", daemon=True
        )
        self._thread.start()
        self._closed = False
        self.stream: SessionStream | None = None
        try:
            self.run(self._start()).result(timeout=connect_timeout)
        except BaseException:
            self.close()
            raise
        _live.add(self)

    @property
    def session_id(self) -> str:
        """The session's id ("" until it is open)."""
        return self.stream.session_id if self.stream is not None else ""

    # ------------------------------------------------------------------ public
    def run(self, coroutine: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the connection's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def submit(self, submit: scheduler_pb2.Submit) -> concurrent.futures.Future[Any]:
        """Send a Submit (its request id is chosen here); the future gets its Result message."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        stream = self.stream
        if stream is None or stream.ended is not None:  # nothing would ever answer it
            future.set_exception(
                stream.ended if stream is not None and stream.ended else _closed_error()
            )
            return future
        self._loop.call_soon_threadsafe(self._submit_on_loop, stream, submit, future)
        return future

    def unary(
        self, method: str, request: Any, timeout: float | None = None
    ) -> concurrent.futures.Future[Any]:
        """Call a unary RPC of the Treadle service; errors become RequestFailedError."""

        async def call() -> Any:
            stub = scheduler_pb2_grpc.TreadleStub(self._channel)
            try:
                return await getattr(stub, method)(request, metadata=self.metadata, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                raise rpc_failure(exc) from None

        return self.run(call())

    def stream_call(self, method: str, request: Any) -> concurrent.futures.Future[list[Any]]:
        """Call a server-streaming RPC and gather its messages."""

        async def call() -> list[Any]:
            stub = scheduler_pb2_grpc.TreadleStub(self._channel)
            try:
                return [m async for m in getattr(stub, method)(request, metadata=self.metadata)]
            except grpc.aio.AioRpcError as exc:
                raise rpc_failure(exc) from None

        return self.run(call())

    def close(self) -> None:
        """End the session stream and stop the thread (also done at interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        try:
            self.run(self._stop()).result(timeout=10)
        except Exception:  # already broken: nothing left to close cleanly
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ loop side
    async def _start(self) -> None:
        # a connection that died silently (no reset: a dropped route, a frozen peer) is noticed
        # by keepalive: the stream fails UNAVAILABLE and reconnects on a fresh connection
        self._channel = grpc.aio.insecure_channel(self.target, options=self.channel_options)
        stub = scheduler_pb2_grpc.TreadleStub(self._channel)
        try:  # a unary call first: a wrong key or address fails here, plainly
            await stub.GetCapabilities(
                scheduler_pb2.GetCapabilitiesRequest(), metadata=self.metadata, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            raise rpc_failure(exc) from None
        stream = SessionStream(
            self._channel,
            self.metadata,
            client_version=f"treadle-python/{__version__}",
            heartbeat_seconds=self.heartbeat_seconds,
            reconnect_attempts=self.reconnect_attempts,
        )
        await stream.open()
        self.stream = stream

    @staticmethod
    def _submit_on_loop(
        stream: SessionStream,
        submit: scheduler_pb2.Submit,
        future: concurrent.futures.Future[Any],
    ) -> None:
        def deliver(done: asyncio.Future[scheduler_pb2.Result]) -> None:
            if future.done():
                return
            error = done.exception()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result())

        stream.submit(submit).add_done_callback(deliver)

    async def _stop(self) -> None:
        if self.stream is not None:  # the scheduler releases the session and its models now
            await self.stream.close(_closed_error(), release=True)
        if hasattr(self, "_channel"):
            await self._channel.close(None)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


def _closed_error() -> RequestFailedError:
    return RequestFailedError("CANCELLED", "the client was closed", "user")


# connections not closed yet; weak, so that a forgotten client is not kept alive by this set
_live: weakref.WeakSet[Connection] = weakref.WeakSet()


@atexit.register
def _close_live() -> None:
    """Close the connections a script left open: their loop stops with no task pending."""
    for connection in list(_live):
        connection.close()


# a forked child has the parent's connections but not their threads: it must not wait on them
os.register_at_fork(after_in_child=_live.clear)
