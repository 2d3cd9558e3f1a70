"""What every route reads: the scheduler channel, the sessions, the futures, signed downloads.

The scheduler is reached over one gRPC channel (keepalive and the services' message limit, as
every link of the mesh); each call carries the caller's own API key, so the scheduler
authenticates every request and scopes it to its tenant as it would for Treadle's own SDK. Keys
the scheduler has accepted are remembered, as digests, for a minute, so that a client's first
calls (client/config, capabilities) are not each a round trip to check the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from fastapi import Request

from treadle.contract.transport import MAX_MESSAGE_BYTES, channel_options
from treadle.v1 import scheduler_pb2, scheduler_pb2_grpc
from treadle_gateway.config import GatewayConfig
from treadle_gateway.errors import GatewayError, from_rpc
from treadle_gateway.futures import FutureTable
from treadle_gateway.sessions import SessionRegistry, key_digest

log = logging.getLogger(__name__)

M = TypeVar("M")
KEY_CHECK_SECONDS = 60.0
SWEEP_SECONDS = 30.0


@dataclass(frozen=True)
class Download:
    """A signed link's authority: whose key, which checkpoint, until when, and which file of it
    (empty: the whole archive)."""

    api_key: str
    path: str
    expires: float
    file_name: str = ""


class Gateway:
    """The gateway's shared state (one per process)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.futures = FutureTable(config.result_keep_seconds)
        self.channel: grpc.aio.Channel | None = None
        self._sessions: SessionRegistry | None = None
        self._checked: dict[bytes, float] = {}  # key digest -> when the scheduler accepted it
        self._downloads: dict[str, Download] = {}
        self._max_seq_len: dict[str, int] = {}  # served base model -> context length
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def sessions(self) -> SessionRegistry:
        """The Tinker sessions (available once started)."""
        assert self._sessions is not None, "the gateway has not started"
        return self._sessions

    @property
    def stub(self) -> scheduler_pb2_grpc.TreadleAsyncStub:
        """The scheduler's public API."""
        assert self.channel is not None, "the gateway has not started"
        return scheduler_pb2_grpc.TreadleStub(self.channel)

    async def start(self) -> None:
        """Connect to the scheduler and start the sweep."""
        options = channel_options(
            self.config.peer_keepalive_seconds, max_message_bytes=MAX_MESSAGE_BYTES
        )
        self.channel = grpc.aio.insecure_channel(self.config.scheduler, options=options)
        self._sessions = SessionRegistry(self.channel)
        self._sweeper = asyncio.create_task(self._sweep(), name="gateway-sweep")

    async def stop(self) -> None:
        """Let go of the sessions' streams and the channel."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._sessions is not None:
            await self._sessions.close()
        if self.channel is not None:
            await self.channel.close(None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.futures.sweep()
            self.sessions.sweep()
            now = time.monotonic()
            self._checked = {k: t for k, t in self._checked.items() if now - t < KEY_CHECK_SECONDS}
            self._downloads = {t: d for t, d in self._downloads.items() if d.expires > now}

    # ------------------------------------------------------------------ the scheduler
    async def call(self, method: str, request: Any, api_key: str, timeout: float = 60.0) -> Any:
        """A unary call to the scheduler as `api_key` (GatewayError with its status if it
        fails)."""
        try:
            return await getattr(self.stub, method)(
                request, metadata=(("x-api-key", api_key),), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc(exc) from None

    async def stream(self, method: str, request: Any, api_key: str) -> AsyncIterator[Any]:
        """A server-streaming call to the scheduler as `api_key`."""
        call = getattr(self.stub, method)(request, metadata=(("x-api-key", api_key),))
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise from_rpc(exc) from None

    async def max_seq_len(self, base_model: str, api_key: str) -> int:
        """The context length of a served base model (400 naming base_model if not served)."""
        if base_model not in self._max_seq_len:
            caps = await self.call(
                "GetCapabilities", scheduler_pb2.GetCapabilitiesRequest(), api_key, 10
            )
            self._max_seq_len.update({m.name: int(m.max_seq_len) for m in caps.models})
        if base_model not in self._max_seq_len:
            raise GatewayError(
                400, f"base_model: {base_model!r} is not served here", "user", "base_model"
            )
        return self._max_seq_len[base_model]

    async def check_key(self, api_key: str) -> None:
        """Refuse a key the scheduler does not accept (401), asking it at most once a minute."""
        digest = key_digest(api_key)
        if time.monotonic() - self._checked.get(digest, -KEY_CHECK_SECONDS) < KEY_CHECK_SECONDS:
            return
        await self.call("GetCapabilities", scheduler_pb2.GetCapabilitiesRequest(), api_key, 10)
        self._checked[digest] = time.monotonic()

    # ------------------------------------------------------------------ signed downloads
    def sign(self, api_key: str, path: str, file_name: str = "") -> tuple[str, float]:
        """A token that lets its bearer download `path` (or one file of it) as `api_key` until
        it expires; returns (token, expiry as Unix time)."""
        token = secrets.token_urlsafe(32)
        expires = time.monotonic() + self.config.download_seconds
        self._downloads[token] = Download(api_key, path, expires, file_name)
        return token, time.time() + self.config.download_seconds

    def redeem(self, token: str) -> Download:
        """The download a token stands for (404 when unknown or expired)."""
        download = self._downloads.get(token)
        if download is None or download.expires < time.monotonic():
            raise GatewayError(404, "download link unknown or expired", "user", "token")
        return download


def api_key(request: Request) -> str:
    """The caller's API key (X-API-Key; 401 when it is missing)."""
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        raise GatewayError(401, "X-API-Key: an API key is required", "user", "X-API-Key")
    return key


def gateway_of(request: Request) -> Gateway:
    """The process's Gateway."""
    gateway: Gateway = request.app.state.gateway
    return gateway
