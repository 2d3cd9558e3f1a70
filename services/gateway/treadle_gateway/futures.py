"""Futures as the tinker SDK polls them: a request id now, its result when it exists.

Every asynchronous call answers `{"request_id": ...}` at once; the work runs as an asyncio task
whose outcome is a `Result` (what to send back) or a GatewayError. `retrieve_future` waits on that
task for up to the long-poll window and answers the moment it ends, so a client never waits a
polling interval for a result that is there; when the window ends first it answers `try_again`
with the request's queue state. Results stay retrievable for `keep_seconds` after they end (the
SDK may ask again after a lost connection), then are dropped.

Session-level polling (`retrieve_futures`, tinker 0.29 and later, for sampling) reads the same
futures: each sampling client has an event log of its finished requests, read from a cursor.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from treadle_gateway.errors import GatewayError, not_found

log = logging.getLogger(__name__)

Render = Callable[[bool], tuple[bytes, str]]  # protobuf wanted -> (body, media type)


@dataclass(frozen=True)
class Result:
    """A finished request's answer: JSON, or a renderer for results the SDK reads as protobuf
    (ForwardBackwardOutput, SampleResponse)."""

    json: dict[str, Any] | None = None
    render: Render | None = None


@dataclass(eq=False)
class TinkerFuture:
    """One request the SDK will poll for."""

    request_id: str
    owner: bytes  # digest of the API key that made it: only that key may read it
    kind: str  # the SDK's name for it: ForwardBackward, Sample, SaveWeights, ...
    task: asyncio.Future[Result]
    queue_position: int | None = None  # ahead of it in its trainer's queue, once accepted
    ended_at: float | None = None
    log: SampleLog | None = None  # the sampling client's event log, for retrieve_futures


@dataclass(eq=False)
class SampleLog:
    """Finished sample requests of one sampling client (sampling session, clone), numbered."""

    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    cursor: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, future: TinkerFuture) -> None:
        """A request of this client ended."""
        self.cursor += 1
        failed = future.task.cancelled() or future.task.exception() is not None
        event: dict[str, Any] = {
            "state": "failed" if failed else "finished",
            "request_id": future.request_id,
        }
        if not failed:
            event["response_payload_uncompressed_size"] = None
        self.events.append((self.cursor, event))
        self.changed.set()

    async def after(self, cursor: int, timeout: float) -> tuple[list[dict[str, Any]], int]:
        """Events after `cursor` (those up to it are seen and dropped), waiting up to `timeout`
        for one."""
        self.events = [(n, e) for n, e in self.events if n > cursor]
        if not self.events and timeout > 0:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return [e for _, e in self.events], self.cursor


class FutureTable:
    """Every future the gateway holds, by request id."""

    def __init__(self, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        self._futures: dict[str, TinkerFuture] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def start(
        self, owner: bytes, kind: str, work: Awaitable[Result], log: SampleLog | None = None
    ) -> TinkerFuture:
        """Run `work` as a new future of `owner`'s."""
        task = asyncio.ensure_future(work)
        future = TinkerFuture(f"req-{uuid.uuid4().hex}", owner, kind, task, log=log)
        self._futures[future.request_id] = future
        task.add_done_callback(lambda _: self._ended(future))
        return future

    def _ended(self, future: TinkerFuture) -> None:
        future.ended_at = time.monotonic()
        error = None if future.task.cancelled() else future.task.exception()
        if error is not None and not isinstance(error, GatewayError):  # a bug, not a refusal
            log.error("request failed", extra={"kind": future.kind}, exc_info=error)
        if future.log is not None:
            future.log.record(future)

    def get(self, request_id: str, owner: bytes) -> TinkerFuture:
        """The future `request_id` if `owner` made it (404 otherwise, as for an unknown one)."""
        future = self._futures.get(request_id)
        if future is None or not hmac.compare_digest(future.owner, owner):
            raise not_found("request_id", f"unknown request {request_id!r}")
        return future

    def forget(self, request_ids: list[str], owner: bytes) -> None:
        """Drop finished futures whose results the client has read."""
        for request_id in request_ids:
            future = self._futures.get(request_id)
            if future is not None and future.task.done() and future.owner == owner:
                del self._futures[request_id]

    async def wait(self, future: TinkerFuture, timeout: float) -> Result | None:
        """Its result, waiting up to `timeout`; None when it is still running then. A failed
        request raises its GatewayError."""
        if not future.task.done():
            await asyncio.wait({future.task}, timeout=timeout)
            if not future.task.done():
                return None
        if future.task.cancelled():
            raise GatewayError(499, "the request was cancelled", "user")
        error = future.task.exception()
        if isinstance(error, GatewayError):
            raise error
        if error is not None:
            raise GatewayError(500, f"{future.kind} failed ({type(error).__name__})", "server")
        return future.task.result()

    def sweep(self) -> None:
        """Forget futures that ended more than keep_seconds ago."""
        cutoff = time.monotonic() - self.keep_seconds
        for request_id in [
            r for r, f in self._futures.items() if f.ended_at is not None and f.ended_at < cutoff
        ]:
            del self._futures[request_id]
