"""The one error type services raise for a failed request, and its wire form.

An `OpError` carries a gRPC status code, a message and the path of the offending field; it fails
only the request it belongs to. Its category follows from the code: argument, lookup and
permission errors are the user's, everything else the server's.
"""

from __future__ import annotations

import grpc

from treadle.v1 import common_pb2

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


MAX_MESSAGE_CHARS = 2000  # error text travels in gRPC metadata too, which has a hard size limit


def error_detail(code: grpc.StatusCode, message: str, field: str = "") -> common_pb2.ErrorDetail:
    """An ErrorDetail with the category implied by `code` (long messages are shortened)."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    category = (
        common_pb2.ERROR_CATEGORY_USER if code in USER_CODES else common_pb2.ERROR_CATEGORY_SERVER
    )
    return common_pb2.ErrorDetail(code=code.name, message=message, field=field, category=category)


def status_code(name: str) -> grpc.StatusCode:
    """The StatusCode named `name` (UNKNOWN for an unrecognised name)."""
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)
