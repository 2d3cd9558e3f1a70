"""How every gRPC connection of Treadle is set up: message limits and keepalive.

The SDK's session channel, the services' servers and the channels between services read these
values: a server refuses pings faster than MIN_PING_SECONDS, so no client may be configured to
send them, and every link carries the same message limit both ways (gRPC clients otherwise refuse
replies over 4 MiB).
"""

from __future__ import annotations

from treadle.errors import bad_field

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MIN_PING_SECONDS = 5  # servers accept a client's pings this often; faster ones are refused

Options = list[tuple[str, int]]


def check_keepalive(field: str, every_seconds: float) -> None:
    """A keepalive interval the servers accept (ValidationError naming `field`)."""
    if every_seconds < MIN_PING_SECONDS:
        raise bad_field(
            field,
            f"must be >= {MIN_PING_SECONDS} (servers refuse faster pings), got {every_seconds}",
        )


def keepalive_options(every_seconds: float, timeout_seconds: float | None = None) -> Options:
    """Client channel options that notice a peer gone silently (no reset: a lost node, a dropped
    route) within `every_seconds` + `timeout_seconds` (default half the interval): a ping goes out
    every `every_seconds`, and a connection whose ping stays unanswered for the timeout is closed,
    failing its calls with UNAVAILABLE. gRPC core enforces the ping timeout; the keepalive
    timeout alone closes nothing, so both are set."""
    check_keepalive("keepalive_seconds", every_seconds)
    timeout = int((every_seconds / 2 if timeout_seconds is None else timeout_seconds) * 1000)
    if timeout <= 0:
        raise bad_field("keepalive_timeout", f"must be > 0, got {timeout_seconds}")
    return [
        ("grpc.keepalive_time_ms", int(every_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", timeout),
        ("grpc.http2.ping_timeout_ms", timeout),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def message_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> Options:
    """The message limit, both ways."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def channel_options(
    keepalive_seconds: float,
    keepalive_timeout: float | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Options:
    """Options of a long-lived client channel: the message limit and keepalive."""
    return [
        *message_options(max_message_bytes),
        *keepalive_options(keepalive_seconds, keepalive_timeout),
    ]


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> Options:
    """Options of a server: the message limit, and clients' pings tolerated down to
    MIN_PING_SECONDS apart, with or without calls in flight."""
    return [
        *message_options(max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_SECONDS * 1000),
    ]
