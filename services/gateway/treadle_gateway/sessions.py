"""Tinker sessions, each one the scheduler's session on a stream of its own.

`create_session` opens a scheduler session (treadle.session_stream, with the caller's API key)
and the Tinker session id IS the scheduler's. Its models are named `{session}:train:{n}` by the
scheduler, its sampling clients `{session}:sample:{n}` here, so every id a client sends names the
session it belongs to. A session is bound to the key that opened it: another key gets 404 for
its ids, as for ids that do not exist. The gateway forwards the client's heartbeats and sends
none of its own, so a session lives exactly as long as its client does: the scheduler releases
it after its idle timeout, or at once on `finish`.

What the gateway keeps beyond the scheduler's state are id maps it can rebuild or do without: a
session unknown here (a restarted gateway) is resumed at the scheduler under its id when its key
asks for it; sampling clients are kept by id with their checkpoint path or base model.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import grpc

from treadle.errors import RequestFailedError
from treadle.session_stream import SessionStream
from treadle_gateway.errors import GatewayError, from_failure, not_found
from treadle_gateway.futures import SampleLog

log = logging.getLogger(__name__)

SAMPLE = ":sample:"
SAMPLES_KEPT = 10_000  # sample submissions remembered per session for retries
TRAIN = ":train:"


def key_digest(api_key: str) -> bytes:
    """What the gateway keeps of an API key: its SHA-256."""
    return hashlib.sha256(api_key.encode()).digest()


@dataclass(frozen=True)
class SamplingTarget:
    """What a sampling client samples: a sampler checkpoint (Treadle path) or a base model."""

    base_model: str
    model_path: str = ""  # empty: the base model's own weights


@dataclass(eq=False)
class GatewaySession:
    """One Tinker session."""

    session_id: str
    owner: bytes
    api_key: str
    stream: SessionStream
    sdk_version: str
    sampling: dict[str, SamplingTarget] = field(default_factory=dict)
    # (client, seq_id) -> request id, so that a retried submission is the same future
    samples: OrderedDict[tuple[str, int], str] = field(default_factory=OrderedDict)
    logs: dict[tuple[str, int], SampleLog] = field(default_factory=dict)  # (client, clone)
    models: dict[str, str] = field(default_factory=dict)  # model id -> its base model

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata that authenticates as this session's key."""
        return (("x-api-key", self.api_key),)

    def check_live(self) -> None:
        """410 once the session is over (released, finished, its stream lost for good)."""
        if self.stream.ended is not None:
            reason = self.stream.ended
            message = reason.message if isinstance(reason, RequestFailedError) else str(reason)
            raise GatewayError(410, f"session {self.session_id} has ended: {message}", "user")

    def remember_sample(self, client: str, seq_id: int, request_id: str) -> None:
        """Record a sample submission (the most recent SAMPLES_KEPT of them)."""
        self.samples[(client, seq_id)] = request_id
        while len(self.samples) > SAMPLES_KEPT:
            self.samples.popitem(last=False)

    def sampling_id(self, number: int) -> str:
        """The id of this session's sampling client number `number`."""
        return f"{self.session_id}{SAMPLE}{number}"

    def sample_log(self, sampling_id: str, clone: int) -> SampleLog:
        """The event log of one sampling client (for session-level polling)."""
        return self.logs.setdefault((sampling_id, clone), SampleLog())


class SessionRegistry:
    """Every Tinker session of this gateway, by id."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._sessions: dict[str, GatewaySession] = {}
        self._resuming: dict[str, asyncio.Future[GatewaySession]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    async def open(self, api_key: str, sdk_version: str) -> GatewaySession:
        """A new session at the scheduler, bound to `api_key`."""
        return await self._attach(api_key, sdk_version, "")

    async def _attach(self, api_key: str, sdk_version: str, session_id: str) -> GatewaySession:
        stream = SessionStream(
            self.channel,
            (("x-api-key", api_key),),
            client_version=f"tinker-python/{sdk_version or 'unknown'}",
            heartbeat_seconds=None,  # the client's own heartbeats keep it alive
        )
        try:
            opened = await stream.open(session_id)
        except RequestFailedError as exc:
            raise from_failure(exc) from None
        if session_id and opened != session_id:  # the scheduler no longer has it
            await stream.close(RequestFailedError("NOT_FOUND", "unknown session", "user"), True)
            raise not_found("session_id", f"unknown session {session_id!r}")
        session = GatewaySession(opened, key_digest(api_key), api_key, stream, sdk_version)
        self._sessions[opened] = session
        log.info("session opened", extra={"session": opened, "sdk_version": sdk_version})
        return session

    async def get(self, session_id: str, api_key: str) -> GatewaySession:
        """The live session `session_id` of `api_key` (404 if it is not that key's; 410 once it
        has ended). A session this gateway does not hold is resumed at the scheduler."""
        session = self._sessions.get(session_id)
        if session is None:
            session = await self._resume(session_id, api_key)
        if not hmac.compare_digest(session.owner, key_digest(api_key)):
            raise not_found("session_id", f"unknown session {session_id!r}")
        session.check_live()
        return session

    async def _resume(self, session_id: str, api_key: str) -> GatewaySession:
        if not session_id or TRAIN in session_id or SAMPLE in session_id:
            raise not_found("session_id", f"unknown session {session_id!r}")
        resuming = self._resuming.get(session_id)
        if resuming is None:
            resuming = asyncio.ensure_future(self._attach(api_key, "", session_id))
            self._resuming[session_id] = resuming
            resuming.add_done_callback(lambda _: self._resuming.pop(session_id, None))
        return await asyncio.shield(resuming)

    async def of_model(self, model_id: str, api_key: str) -> GatewaySession:
        """The session a model id (`{session}:train:{n}`) belongs to."""
        session_id, found, _ = model_id.partition(TRAIN)
        if not found:
            raise not_found("model_id", f"unknown model {model_id!r}")
        try:
            return await self.get(session_id, api_key)
        except GatewayError as exc:
            if exc.status == 404:
                raise not_found("model_id", f"unknown model {model_id!r}") from None
            raise

    async def of_sampler(
        self, sampling_id: str, api_key: str
    ) -> tuple[GatewaySession, SamplingTarget]:
        """The session and target of a sampling client id (`{session}:sample:{n}`)."""
        session_id, found, _ = sampling_id.partition(SAMPLE)
        unknown = not_found("sampling_session_id", f"unknown sampling session {sampling_id!r}")
        if not found:
            raise unknown
        try:
            session = await self.get(session_id, api_key)
        except GatewayError as exc:
            if exc.status == 404:
                raise unknown from None
            raise
        target = session.sampling.get(sampling_id)
        if target is None:
            raise unknown
        return session, target

    async def finish(self, session: GatewaySession, reason: str) -> None:
        """End `session` now: the scheduler releases it and its models."""
        self._sessions.pop(session.session_id, None)
        await session.stream.close(
            RequestFailedError("CANCELLED", f"session finished ({reason})", "user"), release=True
        )
        log.info("session finished", extra={"session": session.session_id, "reason": reason})

    def models_of(self, api_key: str) -> dict[str, str]:
        """The models this gateway's sessions of `api_key` created, with their base models."""
        owner = key_digest(api_key)
        return {
            model_id: base_model
            for session in self._sessions.values()
            if hmac.compare_digest(session.owner, owner)
            for model_id, base_model in session.models.items()
        }

    def sweep(self) -> None:
        """Forget sessions that have ended (released by the scheduler, or lost)."""
        for session_id in [s for s, v in self._sessions.items() if v.stream.ended is not None]:
            del self._sessions[session_id]

    async def close(self) -> None:
        """Let go of every stream (the scheduler keeps the sessions until their idle timeout, so
        a restarted gateway resumes them)."""
        streams = [s.stream for s in self._sessions.values()]
        self._sessions.clear()
        stopping = RequestFailedError("UNAVAILABLE", "the gateway is stopping", "server")
        await asyncio.gather(*(s.close(stopping) for s in streams), return_exceptions=True)
