"""Every request's body checked before a route sees it, and every error answered as JSON.

`BodyLimits` (pure ASGI, so it sees the bytes as they arrive) refuses a body over the limit with
413 as soon as it is known to be too big (from Content-Length, or while it streams), an encoding
other than identity or zstd, or a content type a route cannot read (415, naming the header), and
inflates zstd bodies within the same limit (the SDK compresses forward_backward when asked to).
The exception handlers turn every refusal, FastAPI's own included (unknown route, wrong method,
a body that does not match its schema), into the `{"error", "category"}` body the tinker SDK
reads, with the offending field named.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import zstandard
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from starlette.exceptions import HTTPException

from treadle.errors import RequestFailedError, ValidationError
from treadle_gateway.errors import GatewayError, from_failure, from_validation

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
READABLE = (JSON, PROTOBUF, "application/octet-stream")


def error_response(error: GatewayError) -> ORJSONResponse:
    """The answer for `error`."""
    return ORJSONResponse(error.body(), status_code=error.status)


class BodyLimits:
    """ASGI middleware: body size, encoding and content type, before any route runs."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._read(headers, receive)
        except GatewayError as error:
            await error_response(error)(scope, receive, send)
            return
        if headers.get("content-encoding", "identity").strip().lower() == "zstd":
            scope = {
                **scope,
                "headers": [
                    h
                    for h in scope["headers"]
                    if h[0].lower() not in (b"content-encoding", b"content-length")
                ],
            }
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # a disconnect, if it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, headers: dict[str, str], receive: Receive) -> bytes:
        limit = self.max_body_bytes
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "zstd", ""):
            raise GatewayError(
                415,
                f"Content-Encoding: {encoding!r} is not accepted (identity or zstd)",
                "user",
                "Content-Encoding",
            )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_big(int(length))
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(400, "the client went away before its body arrived", "user")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_big(size)
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        if body:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media not in READABLE:
                raise GatewayError(
                    415,
                    f"Content-Type: {media or 'none'!r} is not accepted "
                    f"({JSON}, or {PROTOBUF} for forward_backward)",
                    "user",
                    "Content-Type",
                )
        if encoding == "zstd":
            body = self._inflate(body)
        return body

    def _inflate(self, body: bytes) -> bytes:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(body)
            inflated = reader.read(self.max_body_bytes + 1)
        except zstandard.ZstdError as exc:
            raise GatewayError(400, f"body: not valid zstd ({exc})", "user", "body") from None
        if len(inflated) > self.max_body_bytes:
            raise self._too_big(len(inflated))
        return inflated

    def _too_big(self, size: int) -> GatewayError:
        return GatewayError(
            413, f"body: {size} bytes exceed the limit of {self.max_body_bytes}", "user", "body"
        )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with the SDK's JSON error body."""

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, error: GatewayError) -> ORJSONResponse:
        return error_response(error)

    @app.exception_handler(ValidationError)
    async def contract_error(request: Request, error: ValidationError) -> ORJSONResponse:
        return error_response(from_validation(error))

    @app.exception_handler(RequestFailedError)
    async def scheduler_error(request: Request, error: RequestFailedError) -> ORJSONResponse:
        return error_response(from_failure(error))

    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, error: RequestValidationError) -> ORJSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {}
        location = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
        field = ".".join(location) or "body"
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            field, message = "body", "malformed JSON"
        return error_response(GatewayError(400, f"{field}: {message}", "user", field))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> ORJSONResponse:
        if error.status_code == 404:
            message = f"unknown route {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        return error_response(GatewayError(error.status_code, message, "user", "route"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> ORJSONResponse:
        log.error("request failed", extra={"path": request.url.path}, exc_info=error)
        failure = GatewayError(
            500, f"{request.url.path} failed ({type(error).__name__}); see the logs", "server"
        )
        return error_response(failure)


def json_body(body: bytes, field: str = "body") -> Any:
    """A JSON body, 400 naming `field` when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        raise GatewayError(400, f"{field}: malformed JSON", "user", field) from None
