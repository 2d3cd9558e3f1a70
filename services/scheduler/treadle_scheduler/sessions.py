"""Client sessions: who owns them, their outgoing messages, and release after idle time.

A session outlives its stream: results produced while a client is reconnecting wait in the
session's outbox, and a client that opens a new stream with the same session id within the idle
timeout resumes it. The newest stream is the only one that delivers: attaching one detaches the
previous stream, which may not yet have noticed that its connection is gone and would otherwise
keep taking (and losing) messages meant for the new one. A session that sends nothing (not even
heartbeats) for the idle timeout is released together with its training models.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from treadle.v1 import scheduler_pb2


@dataclass(eq=False)
class Session:
    """One client session."""

    session_id: str
    tenant: str
    outbox: asyncio.Queue[scheduler_pb2.ServerMessage | None] = field(default_factory=asyncio.Queue)
    last_seen: float = field(default_factory=time.monotonic)
    model_ids: set[str] = field(default_factory=set)
    streams: int = 0  # streams attached now
    delivering: asyncio.Event | None = None  # set when the stream delivering now is detached
    closed: bool = False
    model_counter: int = 0

    def touch(self) -> None:
        """Record activity (any message keeps a session alive)."""
        self.last_seen = time.monotonic()

    def send(self, message: scheduler_pb2.ServerMessage) -> None:
        """Queue a message for the client (delivered when a stream is attached)."""
        if not self.closed:
            self.outbox.put_nowait(message)

    def attach(self) -> asyncio.Event:
        """Make a new stream the one that delivers; the event is set once it is detached."""
        if self.delivering is not None:
            self.delivering.set()
        self.delivering = asyncio.Event()
        return self.delivering

    def next_model_id(self) -> str:
        """A new model id in Tinker's form `{session}:train:{n}`."""
        return self.numbered_model_id(self.model_counter)

    def numbered_model_id(self, number: int) -> str:
        """The id of the session's model number `number` (later unnumbered models come after
        it, so the two kinds never collide)."""
        self.model_counter = max(self.model_counter, number + 1)
        return f"{self.session_id}:train:{number}"


class SessionTable:
    """All live sessions, by id."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, Session] = {}

    def open(self, tenant: str, session_id: str = "") -> tuple[Session, bool]:
        """Resume the tenant's session `session_id` if it is live, else open a new one.

        Returns (session, resumed). Another tenant's session id is treated as unknown.
        """
        existing = self._sessions.get(session_id) if session_id else None
        if existing is not None and existing.tenant == tenant and not existing.closed:
            existing.touch()
            return existing, True
        session = Session(session_id=f"s{uuid.uuid4().hex[:16]}", tenant=tenant)
        self._sessions[session.session_id] = session
        return session, False

    def get(self, tenant: str, session_id: str) -> Session | None:
        """The tenant's live session `session_id`, or None."""
        session = self._sessions.get(session_id)
        if session is None or session.tenant != tenant or session.closed:
            return None
        return session

    def idle(self) -> list[Session]:
        """Sessions silent for longer than the idle timeout."""
        cutoff = time.monotonic() - self.idle_seconds
        return [s for s in self._sessions.values() if s.last_seen < cutoff]

    def remove(self, session: Session) -> None:
        """Forget a released session and end its streams."""
        session.closed = True
        self._sessions.pop(session.session_id, None)
        session.outbox.put_nowait(None)

    def __len__(self) -> int:
        return len(self._sessions)
