"""A client's side of one scheduler session: the Session stream, on the caller's event loop.

`SessionStream` opens (or resumes) a session, puts Submit messages on the stream and resolves
each request's asyncio future with its Result (or fails it with a RequestFailedError) by request
id. If the stream breaks it reopens it with the same session id and re-sends every request still
unanswered: training requests keep their (model_id, seq_id), which the scheduler treats as the same
request, so a retry never runs twice. A loss is worth a warning only while requests wait on it: an
idle stream reconnects quietly. Once the session is over for good (the scheduler ended it,
reconnecting gave up, or it was closed) every waiting request fails with the reason, and so does
every later one, at once.

Two clients use it: the SDK's `Connection` (session.py), which runs it on a background thread
and sends a heartbeat every few seconds so that a loop busy in its own code keeps its session, and
the Tinker HTTP gateway, which runs one per Tinker session on its own loop and forwards that
client's heartbeats instead (heartbeat_seconds=None), so that the session lives exactly as long
as its client does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import grpc

from treadle.errors import Category, RequestFailedError
from treadle.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

CATEGORIES: dict[int, Category] = {1: "user", 2: "server"}
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
# what gRPC's core reports, as INTERNAL, when a message is written on a connection that has just
# died: a local transport failure, not an error sent by the scheduler
LOCAL_TRANSPORT_FAILURE = "Internal error from Core"

NEW_CLIENT = "this client's session is over: open a new client to go on"
Outbox = asyncio.Queue[scheduler_pb2.ClientMessage | None]  # None ends the request stream
OnAccepted = Callable[[scheduler_pb2.Accepted], None]


def local_transport_failure(exc: grpc.aio.AioRpcError) -> bool:
    """gRPC's core failed a write on a connection that had just ended (the scheduler's own
    status, e.g. UNAUTHENTICATED for a refused key, can be lost behind it)."""
    return exc.code() == grpc.StatusCode.INTERNAL and exc.details() == LOCAL_TRANSPORT_FAILURE


def transient(exc: grpc.aio.AioRpcError) -> bool:
    """A lost connection (reconnect and resend) rather than an answer from the scheduler."""
    return exc.code() in RETRYABLE or local_transport_failure(exc)


def failure(detail: Any) -> RequestFailedError:
    """A RequestFailedError from an ErrorDetail message."""
    return RequestFailedError(
        detail.code, detail.message, CATEGORIES.get(detail.category, "unknown"), detail.field
    )


def rpc_failure(exc: grpc.aio.AioRpcError) -> RequestFailedError:
    """A RequestFailedError from a failed call's status."""
    code = exc.code()
    category: Category = (
        "server" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL) else "user"
    )
    return RequestFailedError(code.name, exc.details() or "", category)


class _Pending:
    """A request sent and not answered yet."""

    __slots__ = ("future", "on_accepted", "submit")

    def __init__(
        self,
        submit: scheduler_pb2.Submit,
        future: asyncio.Future[scheduler_pb2.Result],
        on_accepted: OnAccepted | None,
    ) -> None:
        self.submit = submit
        self.future = future
        self.on_accepted = on_accepted


class SessionStream:
    """One session with the scheduler, on the event loop that opens it."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: tuple[tuple[str, str], ...],
        *,
        client_version: str,
        heartbeat_seconds: float | None = 5.0,
        reconnect_attempts: int = 20,
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self.client_version = client_version
        self.heartbeat_seconds = heartbeat_seconds
        self.reconnect_attempts = reconnect_attempts
        self.session_id = ""
        self.ended: Exception | None = None  # why the session is over, once it is
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._outbox: Outbox | None = None
        self._runner: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    async def open(self, session_id: str = "") -> str:
        """Open a new session (or resume `session_id`); returns its id once the scheduler has
        confirmed it. RequestFailedError if the scheduler refuses the stream."""
        self.session_id = session_id
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(opened), name="treadle-session-stream")
        await opened
        return self.session_id

    def submit(
        self, submit: scheduler_pb2.Submit, on_accepted: OnAccepted | None = None
    ) -> asyncio.Future[scheduler_pb2.Result]:
        """Send `submit` under a fresh request id; the future gets its Result. `on_accepted`
        hears the scheduler's Accepted (queue position, expected cycle) if one comes."""
        future: asyncio.Future[scheduler_pb2.Result] = asyncio.get_running_loop().create_future()
        if self.ended is not None:  # nothing would ever answer it
            future.set_exception(self.ended)
            return future
        submit.request_id = f"r{next(self._ids)}"
        self._pending[submit.request_id] = _Pending(submit, future, on_accepted)
        self._send(scheduler_pb2.ClientMessage(submit=submit))
        return future

    def heartbeat(self) -> None:
        """Tell the scheduler the client is alive."""
        self._send(scheduler_pb2.ClientMessage(heartbeat=scheduler_pb2.Heartbeat()))

    async def close(self, error: Exception, release: bool = False) -> None:
        """End the stream; what waits fails with `error`. `release` also ends the session on the
        scheduler now (its models are released) instead of after its idle timeout."""
        live = self.ended is None
        self.end(error)
        if release and live and self._outbox is not None and self._runner is not None:
            self._outbox.put_nowait(scheduler_pb2.ClientMessage(close=scheduler_pb2.CloseSession()))
            await asyncio.wait({self._runner}, timeout=5)  # the scheduler ends the stream
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    def end(self, error: Exception) -> None:
        """The session is over: fail what waits, and every later submit, with `error`."""
        if self.ended is None:
            self.ended = error
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(error)

    # ------------------------------------------------------------------ the stream
    def _send(self, message: scheduler_pb2.ClientMessage) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(message)

    async def _run(self, opened: asyncio.Future[None]) -> None:
        """Keep a session stream open, reconnecting on failure."""
        failures = 0
        while True:
            try:
                await self._serve_stream(opened)
                self.end(
                    RequestFailedError(
                        "ABORTED", f"the scheduler ended the session; {NEW_CLIENT}", "user"
                    )
                )
                return
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                failures += 1
                if not opened.done() and not (
                    local_transport_failure(exc) and failures <= self.reconnect_attempts
                ):  # an opening refused or unreachable fails at once; a lost write is retried
                    opened.set_exception(rpc_failure(exc))
                    return
                if not transient(exc) or failures > self.reconnect_attempts:
                    gave_up = f" (reconnecting gave up after {failures - 1} attempts; {NEW_CLIENT})"
                    message = (exc.details() or exc.code().name) + gave_up
                    self.end(RequestFailedError(exc.code().name, message, "server"))
                    return
                log.log(
                    logging.WARNING if self._pending else logging.DEBUG,
                    "session stream lost; reconnecting",
                    extra={"error": exc.details(), "waiting": len(self._pending)},
                )
                await asyncio.sleep(min(5.0, 0.2 * 2**failures))

    async def _serve_stream(self, opened: asyncio.Future[None]) -> None:
        stub = scheduler_pb2_grpc.TreadleStub(self.channel)
        outbox: Outbox = asyncio.Queue()
        outbox.put_nowait(
            scheduler_pb2.ClientMessage(
                open=scheduler_pb2.OpenSession(
                    session_id=self.session_id, client_version=self.client_version
                )
            )
        )
        for entry in self._pending.values():  # re-send what is unanswered (de-duplicated)
            outbox.put_nowait(scheduler_pb2.ClientMessage(submit=entry.submit))
        self._outbox = outbox

        async def requests() -> Any:
            while (message := await outbox.get()) is not None:
                yield message

        call = stub.Session(requests(), metadata=self.metadata)
        heartbeat = (
            asyncio.create_task(self._heartbeat(outbox, self.heartbeat_seconds))
            if self.heartbeat_seconds
            else None
        )
        try:
            async for message in call:
                kind = message.WhichOneof("kind")
                if kind == "result":
                    self._resolve(message.result.request_id, result=message.result)
                elif kind == "accepted":
                    accepted = self._pending.get(message.accepted.request_id)
                    if accepted is not None and accepted.on_accepted is not None:
                        accepted.on_accepted(message.accepted)
                elif kind == "error":
                    if message.error.request_id:
                        self._resolve(message.error.request_id, error=failure(message.error.error))
                    else:  # the session itself is over (released, or refused)
                        detail = message.error.error
                        over = f"{detail.message}; {NEW_CLIENT}"
                        self.end(RequestFailedError(detail.code, over, "user", detail.field))
                        return
                elif kind == "opened":
                    self.session_id = message.opened.session_id
                    if not opened.done():
                        opened.set_result(None)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            # ends requests(), and with it gRPC's task reading it: cancelling a call that has
            # already failed leaves that task waiting on the outbox, pending until exit
            outbox.put_nowait(None)
            call.cancel()
            self._outbox = None

    @staticmethod
    async def _heartbeat(outbox: Outbox, every_seconds: float) -> None:
        while True:
            await asyncio.sleep(every_seconds)
            outbox.put_nowait(scheduler_pb2.ClientMessage(heartbeat=scheduler_pb2.Heartbeat()))

    def _resolve(
        self,
        request_id: str,
        *,
        result: scheduler_pb2.Result | None = None,
        error: Exception | None = None,
    ) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is None or entry.future.done():
            return  # an answer to a request already answered (a re-sent retry)
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(result)  # type: ignore[arg-type]
