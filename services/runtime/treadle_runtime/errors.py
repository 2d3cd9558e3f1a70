"""The one error type services raise for a failed request, and the one mapping to gRPC statuses.

An `OpError` carries a gRPC status code, a message and the path of the offending field; it fails
only the request it belongs to. Its category follows from the code: argument, lookup and
permission errors are the user's, everything else the server's.

`as_op_error` is how every service turns whatever a request raised into its status: an OpError
as it is, a contract check's ValidationError (treadle.contract) as INVALID_ARGUMENT naming its
field, a peer's gRPC status passed on, a timeout as DEADLINE_EXCEEDED, anything else as INTERNAL
(logged with its traceback; the client sees where it failed and the exception's type, never its
text, which may name internals such as object-store keys). `rpc` and `streaming_rpc` wrap a
servicer's handlers with it. Every message is cut to MAX_MESSAGE_CHARS before it leaves.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from prometheus_client import Counter

from treadle.errors import ValidationError
from treadle.v1 import common_pb2

log = logging.getLogger(__name__)

R = TypeVar("R")

USER_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


class OpError(Exception):
    """A request failed with `code`; `field` names the offending input when there is one."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_detail(self) -> common_pb2.ErrorDetail:
        """The wire form."""
        return error_detail(self.code, self.message, self.field)


def invalid(field: str, message: str) -> OpError:
    """INVALID_ARGUMENT naming `field` at the start of the message."""
    return OpError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}", field)


def as_op_error(exc: BaseException, where: str = "request") -> OpError:
    """The OpError a request that raised `exc` ends with (`where` names the failed step in the
    message of an unexpected error, which is logged with its traceback)."""
    if isinstance(exc, OpError):
        return exc
    if isinstance(exc, ValidationError):
        return OpError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
    if isinstance(exc, grpc.aio.AioRpcError):  # a peer's answer, passed on as it came
        return OpError(exc.code(), exc.details() or f"{where}: {exc.code().name}")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return OpError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{where} timed out")
    log.error("request failed", extra={"where": where}, exc_info=exc)
    return OpError(grpc.StatusCode.INTERNAL, f"{where} failed ({type(exc).__name__}); see the logs")


async def abort(context: grpc.aio.ServicerContext, exc: BaseException, where: str) -> NoReturn:
    """End the call with the status `exc` maps to, its message shortened to what gRPC's status
    metadata carries (a longer one would arrive as RESOURCE_EXHAUSTED instead)."""
    error = as_op_error(exc, where)
    await context.abort(error.code, shorten(error.message))
    raise AssertionError("unreachable: abort raises")


def rpc(
    requests: Counter | None = None,
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Decorate a unary handler: whatever it raises ends the call with its mapped status, and
    `requests` (labels method, code), when given, counts every outcome."""

    def wrap(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(method)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
            try:
                return await method(self, request, context)
            except Exception as exc:
                await _end(context, exc, method.__name__)
                raise
            finally:
                _count(requests, method.__name__, context)

        return handler

    return wrap


def streaming_rpc(
    requests: Counter | None = None,
) -> Callable[[Callable[..., AsyncIterator[R]]], Callable[..., AsyncIterator[R]]]:
    """`rpc` for server-streaming handlers (the handler's generator is closed when the call
    ends, whichever way)."""

    def wrap(method: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]:
        @functools.wraps(method)
        async def handler(
            self: Any, request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[R]:
            items = method(self, request, context)
            try:
                async for item in items:
                    yield item
            except Exception as exc:
                await _end(context, exc, method.__name__)
                raise
            finally:
                close = getattr(items, "aclose", None)
                if close is not None:
                    await close()
                _count(requests, method.__name__, context)

        return handler

    return wrap


async def _end(context: grpc.aio.ServicerContext, exc: Exception, where: str) -> None:
    """Abort the call with `exc`'s status, unless `exc` is the handler's own abort."""
    if not isinstance(exc, grpc.aio.AbortError):
        await abort(context, exc, where)


def _count(requests: Counter | None, method: str, context: grpc.aio.ServicerContext) -> None:
    """Count a finished call by its status code (OK unless it was aborted)."""
    if requests is not None:
        code: Any = context.code() or grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        requests.labels(method, name).inc()


MAX_MESSAGE_CHARS = 2000  # error text travels in gRPC metadata too, which has a hard size limit


def shorten(message: str) -> str:
    """`message`, cut to MAX_MESSAGE_CHARS."""
    if len(message) > MAX_MESSAGE_CHARS:
        return message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message


def error_detail(code: grpc.StatusCode, message: str, field: str = "") -> common_pb2.ErrorDetail:
    """An ErrorDetail with the category implied by `code` (long messages are shortened)."""
    message = shorten(message)
    category = (
        common_pb2.ERROR_CATEGORY_USER if code in USER_CODES else common_pb2.ERROR_CATEGORY_SERVER
    )
    return common_pb2.ErrorDetail(code=code.name, message=message, field=field, category=category)


def status_code(name: str) -> grpc.StatusCode:
    """The StatusCode named `name` (UNKNOWN for an unrecognised name)."""
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)
