"""Errors as the tinker SDK reads them: an HTTP status and a JSON body `{"error", "category"}`.

Bad input is a 4xx with category `user` and the offending field named (`field`, and at the start
of the message), so the SDK fails the call at once instead of retrying it; what the services
refuse or fail keeps the scheduler's own message and category. The status follows the gRPC code:
INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403 (never for another tenant's ids:
those are NOT_FOUND 404, like ids that do not exist), a session that has ended 410 (the SDK stops
its heartbeats), anything the server could retry 5xx. A 400 always has a body: the SDK takes an
empty 400 for a proxy's and retries it.
"""

from __future__ import annotations

from typing import Literal

import grpc

from treadle.errors import RequestFailedError, ValidationError

Category = Literal["user", "server", "unknown"]

STATUS_OF_CODE = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "FAILED_PRECONDITION": 400,
    "ALREADY_EXISTS": 409,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
}


class GatewayError(Exception):
    """A request refused or failed, as the HTTP answer the SDK expects."""

    def __init__(
        self, status: int, message: str, category: Category = "user", field: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.field = field

    def body(self) -> dict[str, str]:
        """The JSON body: `error` and `category` (read by the SDK), and `field`."""
        body = {"error": self.message, "category": self.category}
        if self.field:
            body["field"] = self.field
        return body


def bad_input(field: str, message: str) -> GatewayError:
    """400, category user, naming `field`."""
    return GatewayError(400, f"{field}: {message}", "user", field)


def not_found(field: str, message: str) -> GatewayError:
    """404, category user: unknown, or another tenant's (the same answer for both)."""
    return GatewayError(404, f"{field}: {message}", "user", field)


def from_validation(exc: ValidationError) -> GatewayError:
    """A contract check's refusal (treadle.contract) as a 400 naming its field."""
    return GatewayError(400, str(exc), "user", exc.field)


def from_failure(exc: RequestFailedError) -> GatewayError:
    """A scheduler's refusal or failure, with its message and category."""
    category: Category = exc.category if exc.category in ("user", "server") else "unknown"
    return GatewayError(STATUS_OF_CODE.get(exc.code, 500), exc.message, category, exc.field)


def from_rpc(exc: grpc.aio.AioRpcError) -> GatewayError:
    """A failed call to the scheduler."""
    code = exc.code().name
    category: Category = (
        "server" if STATUS_OF_CODE.get(code, 500) >= 500 or code == "RESOURCE_EXHAUSTED" else "user"
    )
    return GatewayError(STATUS_OF_CODE.get(code, 500), exc.details() or code, category)
