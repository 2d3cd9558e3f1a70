"""The SDK's one connection to the scheduler: a Session stream run by a background thread.

Calls from any thread put Submit messages on the stream and get a concurrent future back; the
reader matches Results and Errors to futures by request id. A heartbeat goes out every few
seconds from the background thread, so a training loop busy in its own code keeps its session,
and keepalive pings notice a connection that died without a word.
If the stream breaks, the connection reopens it with the same session id and re-sends every
request still unanswered: training requests keep their (model_id, seq_id), which the scheduler
treats as the same request, so a retry never runs twice. A loss is worth a warning only while
requests wait on it: an idle connection (a script past its last result, a mesh stopped after it)
reconnects quietly. Once the session is over for good (the scheduler ended it, reconnecting gave
up, or close() was called) every waiting request fails with the reason, and so does every later
one, at once.

A script that ends without close() still ends its session cleanly: live connections are closed
at interpreter exit (atexit, through weak references), so no task of the loop is left pending.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import itertools
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from treadle import __version__
from treadle.contract import transport
from treadle.errors import Category, RequestFailedError
from treadle.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")
CATEGORIES: dict[int, Category] = {1: "user", 2: "server"}
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
# what gRPC's core reports, as INTERNAL, when a message is written on a connection that has just
# died: a local transport failure, not an error sent by the scheduler
LOCAL_TRANSPORT_FAILURE = "Internal error from Core"


def _transient(exc: grpc.aio.AioRpcError) -> bool:
    """A lost connection (reconnect and resend) rather than an answer from the scheduler."""
    code = exc.code()
    return code in RETRYABLE or (
        code == grpc.StatusCode.INTERNAL and (exc.details() or "") == LOCAL_TRANSPORT_FAILURE
    )


Outbox = asyncio.Queue[scheduler_pb2.ClientMessage | None]  # None ends the request stream


def failure(detail: Any) -> RequestFailedError:
    """A RequestFailedError from an ErrorDetail message."""
    return RequestFailedError(
        detail.code,
        detail.message,
        CATEGORIES.get(detail.category, "unknown"),
        detail.field,
    )


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
        self.session_id = ""
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[scheduler_pb2.Submit, concurrent.futures.Future[Any]]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="treadle-session", daemon=True
        )
        self._thread.start()
        self._outbox: Outbox | None = None
        self._closed = False
        self._ended: Exception | None = None  # why the session is over, once it is
        try:
            self.run(self._start()).result(timeout=connect_timeout)
        except BaseException:
            self.close()
            raise
        _live.add(self)

    # ------------------------------------------------------------------ public
    def run(self, coroutine: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the connection's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def submit(
        self, build: Callable[[str], scheduler_pb2.Submit]
    ) -> concurrent.futures.Future[Any]:
        """Send a Submit built for a fresh request id; the future gets its Result message."""
        request_id = f"r{next(self._ids)}"
        submit = build(request_id)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            ended = self._ended
            if ended is None:
                self._pending[request_id] = (submit, future)
        if ended is not None:  # nothing would ever answer it
            future.set_exception(ended)
            return future
        self._loop.call_soon_threadsafe(self._send, scheduler_pb2.ClientMessage(submit=submit))
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
                raise RequestFailedError(
                    exc.code().name, exc.details() or "", _category(exc.code())
                ) from None

        return self.run(call())

    def stream(self, method: str, request: Any) -> concurrent.futures.Future[list[Any]]:
        """Call a server-streaming RPC and gather its messages."""

        async def call() -> list[Any]:
            stub = scheduler_pb2_grpc.TreadleStub(self._channel)
            try:
                return [m async for m in getattr(stub, method)(request, metadata=self.metadata)]
            except grpc.aio.AioRpcError as exc:
                raise RequestFailedError(
                    exc.code().name, exc.details() or "", _category(exc.code())
                ) from None

        return self.run(call())

    def close(self) -> None:
        """End the session stream and stop the thread (also done at interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        self._end(RequestFailedError("CANCELLED", "the client was closed", "user"))
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
            raise RequestFailedError(
                exc.code().name, exc.details() or "", _category(exc.code())
            ) from None
        opened = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(opened))
        await opened

    async def _stop(self) -> None:
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        await self._channel.close(None)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _send(self, message: scheduler_pb2.ClientMessage) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(message)

    async def _run(self, opened: asyncio.Future[None]) -> None:
        """Keep a session stream open, reconnecting on failure."""
        failures = 0
        while True:
            try:
                await self._serve_stream(opened)
                self._end(
                    RequestFailedError("UNAVAILABLE", "the scheduler ended the session", "server")
                )
                return
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                failures += 1
                if not opened.done():
                    opened.set_exception(
                        RequestFailedError(
                            exc.code().name, exc.details() or "", _category(exc.code())
                        )
                    )
                    return
                if not _transient(exc) or failures > self.reconnect_attempts:
                    self._end(RequestFailedError(exc.code().name, exc.details() or "", "server"))
                    return
                with self._lock:
                    waiting = len(self._pending)
                log.log(
                    logging.WARNING if waiting else logging.DEBUG,
                    "session stream lost; reconnecting",
                    extra={"error": exc.details(), "waiting": waiting},
                )
                await asyncio.sleep(min(5.0, 0.2 * 2**failures))

    async def _serve_stream(self, opened: asyncio.Future[None]) -> None:
        stub = scheduler_pb2_grpc.TreadleStub(self._channel)
        outbox: Outbox = asyncio.Queue()
        outbox.put_nowait(
            scheduler_pb2.ClientMessage(
                open=scheduler_pb2.OpenSession(
                    session_id=self.session_id, client_version=f"treadle-python/{__version__}"
                )
            )
        )
        with self._lock:  # re-send what is unanswered (the scheduler de-duplicates)
            for submit, _ in self._pending.values():
                outbox.put_nowait(scheduler_pb2.ClientMessage(submit=submit))
        self._outbox = outbox

        async def requests() -> Any:
            while (message := await outbox.get()) is not None:
                yield message

        call = stub.Session(requests(), metadata=self.metadata)
        heartbeat = asyncio.create_task(self._heartbeat(outbox))
        try:
            async for message in call:
                kind = message.WhichOneof("kind")
                if kind == "opened":
                    self.session_id = message.opened.session_id
                    if not opened.done():
                        opened.set_result(None)
                elif kind == "result":
                    self._resolve(message.result.request_id, result=message.result)
                elif kind == "error":
                    if message.error.request_id:
                        self._resolve(message.error.request_id, error=failure(message.error.error))
                    else:  # the session itself failed (released, or refused)
                        self._end(failure(message.error.error))
                        return
        finally:
            heartbeat.cancel()
            # ends requests(), and with it gRPC's task reading it: cancelling a call that has
            # already failed leaves that task waiting on the outbox, pending until exit
            outbox.put_nowait(None)
            call.cancel()
            self._outbox = None

    async def _heartbeat(self, outbox: Outbox) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            outbox.put_nowait(scheduler_pb2.ClientMessage(heartbeat=scheduler_pb2.Heartbeat()))

    def _resolve(
        self, request_id: str, *, result: Any = None, error: Exception | None = None
    ) -> None:
        with self._lock:
            entry = self._pending.pop(request_id, None)
        if entry is None:
            return  # an answer to a request already answered (a re-sent retry)
        future = entry[1]
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _end(self, error: Exception) -> None:
        """The session is over: fail what waits, and every later submit, with `error`."""
        with self._lock:
            if self._ended is None:
                self._ended = error
            pending, self._pending = self._pending, {}
        for _, future in pending.values():
            if not future.done():
                future.set_exception(error)


# connections not closed yet; weak, so that a forgotten client is not kept alive by this set
_live: weakref.WeakSet[Connection] = weakref.WeakSet()


@atexit.register
def _close_live() -> None:
    """Close the connections a script left open: their loop stops with no task pending."""
    for connection in list(_live):
        connection.close()


def _category(code: grpc.StatusCode) -> Any:
    return "server" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL) else "user"
