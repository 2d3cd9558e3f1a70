"""Polling for results: retrieve_future, session-level retrieve_futures, cancel_future.

retrieve_future holds the request until the future's result exists, then answers at once: the
result (protobuf when the SDK asks for it and the result has that form), or the request's error
as `{"error", "category"}`. When the long-poll window ends first it answers `try_again` with the
queue state; the window is the configured one, cut to leave a margin under the client's own read
timeout (the SDK says it in `x-stainless-read-timeout`).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import ORJSONResponse

from treadle_gateway.errors import GatewayError, not_found
from treadle_gateway.gateway import api_key, gateway_of
from treadle_gateway.middleware import JSON, PROTOBUF
from treadle_gateway.schemas import RequestRef, RetrieveFutureRequest, RetrieveFuturesRequest
from treadle_gateway.sessions import SAMPLE, key_digest

router = APIRouter(prefix="/api/v1", tags=["futures"])

MARGIN_SECONDS = 5.0  # answered this long before the client's read timeout


def _window(request: Request, configured: float) -> float:
    read_timeout = request.headers.get("x-stainless-read-timeout", "")
    try:
        return max(0.0, min(configured, float(read_timeout) - MARGIN_SECONDS))
    except ValueError:
        return configured


@router.post("/retrieve_future")
async def retrieve_future(body: RetrieveFutureRequest, request: Request) -> Response:
    """The future's result, as soon as it exists."""
    gateway = gateway_of(request)
    future = gateway.futures.get(body.request_id, key_digest(api_key(request)))
    try:
        result = await gateway.futures.wait(
            future, _window(request, gateway.config.long_poll_seconds)
        )
    except GatewayError as error:  # the request failed: a 200 whose body says so
        return ORJSONResponse({"error": error.message, "category": error.category})
    if result is None:
        state = "active"
        answer: dict[str, Any] = {
            "type": "try_again",
            "request_id": future.request_id,
            "queue_state": state,
        }
        if future.queue_position is not None:
            answer["queue_state_reason"] = f"{future.queue_position} requests ahead in the queue"
        return ORJSONResponse(answer)
    if result.render is not None:
        body_bytes, media = result.render(PROTOBUF in request.headers.get("accept", ""))
        return Response(body_bytes, media_type=media)
    return Response(orjson.dumps(result.json), media_type=JSON)


@router.post("/retrieve_futures")
async def retrieve_futures(body: RetrieveFuturesRequest, request: Request) -> dict[str, Any]:
    """The sample requests of one sampling client that ended since `prev_cursor` (long-polled;
    `timeout: 0` only acknowledges `retrieved_request_ids`)."""
    gateway, key = gateway_of(request), api_key(request)
    target = body.target
    if target.type != "sampling_session" or SAMPLE not in target.sampling_session_id:
        raise not_found("target.sampling_session_id", f"unknown {target.type} target")
    session, _ = await gateway.sessions.of_sampler(target.sampling_session_id, key)
    gateway.futures.forget(body.retrieved_request_ids, session.owner)
    log = session.sample_log(target.sampling_session_id, target.cloned_sampler_id)
    window = _window(request, gateway.config.long_poll_seconds)
    wait = window if body.timeout is None else min(window, max(0.0, body.timeout))
    events, cursor = await log.after(body.prev_cursor, wait)
    return {"completions": events, "cursor": cursor}


@router.post("/cancel_future")
async def cancel_future(body: RequestRef, request: Request) -> dict[str, Any]:
    """Give up on a request: its future ends cancelled (work already running finishes)."""
    gateway = gateway_of(request)
    future = gateway.futures.get(body.request_id, key_digest(api_key(request)))
    future.task.cancel()
    return {}
