"""Errors raised by the SDK: every server error keeps its code, category and message."""

from __future__ import annotations

from typing import Literal

Category = Literal["user", "server", "unknown"]


class TreadleError(Exception):
    """Base class of SDK errors."""


class RequestFailedError(TreadleError):
    """The service refused or failed a request.

    `code` is the gRPC status name (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, ...), `category`
    says whether retrying unchanged can help ("server") or not ("user"), and `field` names the
    offending input when there is one.
    """

    def __init__(self, code: str, message: str, category: Category = "unknown", field: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.category = category
        self.field = field


class ValidationError(TreadleError, ValueError):
    """Bad input, caught before it could do harm; `field` names the offending input.

    The SDK raises it before a request is sent; the services raise the same error from the same
    checks (treadle.contract) and answer it as INVALID_ARGUMENT naming the field.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def bad_field(field: str, message: str) -> ValidationError:
    """A ValidationError for `field`, whose message starts with the field's path."""
    return ValidationError(f"{field}: {message}", field)


APIError = RequestFailedError  # Tinker's name
