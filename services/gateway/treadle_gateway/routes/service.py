"""Client bootstrap and sessions: client/config, sessions and heartbeats, capabilities, telemetry.

`client/config` is every SDK's first call: the key is checked with the scheduler and the SDK's
version against the ones served (versions.py). `create_session` opens the scheduler session the
Tinker session is; heartbeats go through to it and `finish` ends it at once. Telemetry is
accepted and dropped (it can hold request headers, API keys among them).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from treadle.v1 import scheduler_pb2
from treadle_gateway import versions
from treadle_gateway.gateway import api_key, gateway_of
from treadle_gateway.schemas import (
    ClientConfigRequest,
    CreateSessionRequest,
    FinishRequest,
    SessionRef,
)

router = APIRouter(prefix="/api/v1", tags=["service"])


@router.post("/client/config")
async def client_config(body: ClientConfigRequest, request: Request) -> dict[str, Any]:
    """Flags for this SDK; refuses an SDK version the gateway cannot serve."""
    gateway = gateway_of(request)
    versions.check(body.sdk_version or _user_agent_version(request))
    await gateway.check_key(api_key(request))
    return versions.client_config(
        gateway.config.compress_forward_backward, gateway.config.session_polling
    )


@router.post("/client/dynamic_config")
async def client_dynamic_config(body: ClientConfigRequest, request: Request) -> dict[str, Any]:
    """Flags the SDK refreshes: none change here."""
    api_key(request)
    return {"refresh_interval_sec": 300}


@router.post("/create_session")
async def create_session(body: CreateSessionRequest, request: Request) -> dict[str, Any]:
    """A new session: the scheduler's, on a stream of its own."""
    version = body.sdk_version or _user_agent_version(request)
    versions.check(version)
    session = await gateway_of(request).sessions.open(api_key(request), version)
    answer: dict[str, Any] = {"session_id": session.session_id, "type": "create_session"}
    warning = versions.warning(version)
    if warning:
        answer["warning_message"] = warning
    return answer


@router.post("/session_heartbeat")
async def session_heartbeat(body: SessionRef, request: Request) -> dict[str, Any]:
    """The client is alive: so is its session."""
    session = await gateway_of(request).sessions.get(body.session_id, api_key(request))
    session.stream.heartbeat()
    return {"type": "session_heartbeat"}


@router.post("/sessions/{session_id}/finish")
async def finish_session(session_id: str, body: FinishRequest, request: Request) -> dict[str, Any]:
    """End the session now: the scheduler releases it and its models."""
    sessions = gateway_of(request).sessions
    session = await sessions.get(session_id, api_key(request))
    await sessions.finish(session, body.reason.type)
    return {}


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    """The session's training runs and sampling clients."""
    session = await gateway_of(request).sessions.get(session_id, api_key(request))
    return {"training_run_ids": sorted(session.models), "sampler_ids": sorted(session.sampling)}


@router.post("/telemetry")
async def telemetry(request: Request) -> dict[str, str]:
    """Accepted, and dropped."""
    api_key(request)
    return {"status": "accepted"}


@router.get("/get_server_capabilities")
async def get_server_capabilities(request: Request) -> dict[str, Any]:
    """The base models the mesh serves."""
    caps = await gateway_of(request).call(
        "GetCapabilities", scheduler_pb2.GetCapabilitiesRequest(), api_key(request)
    )
    return {
        "supported_models": [
            {
                "model_name": m.name,
                "max_context_length": m.max_seq_len,
                "trainable": True,
                "sampleable": True,
            }
            for m in caps.models
        ]
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway answers."""
    return {"status": "ok"}


def _user_agent_version(request: Request) -> str:
    """The SDK version from `User-Agent: AsyncTinker/Python 0.38.0`, if there."""
    agent = request.headers.get("user-agent", "")
    return agent.rsplit(" ", 1)[-1] if agent.startswith("AsyncTinker/") else ""
