"""gRPC server bootstrap shared by every service: bind, health, metrics, graceful shutdown.

`run_server` is the whole life of a service process: it sets up JSON logging, starts the
Prometheus endpoint, registers the service's servicers and the standard gRPC health service,
serves until SIGTERM or SIGINT, then marks itself NOT_SERVING, lets in-flight calls finish within
the grace period, and runs the service's own shutdown hook.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from treadle_runtime.lifetime import die_with_launcher
from treadle_runtime.logs import setup_logging

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class ServerConfig:
    """Fields every service's config starts with."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=0, metadata={"help": "gRPC port (0 picks a free one)"})
    metrics_port: int = field(default=0, metadata={"help": "Prometheus port (0 = off)"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    grace_seconds: float = field(default=5.0, metadata={"help": "shutdown grace period"})
    max_message_bytes: int = field(
        default=MAX_MESSAGE_BYTES, metadata={"help": "largest gRPC message accepted"}
    )

    def validate(self) -> None:
        """Refuse values no server can run with."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not in 0..65535")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: {self.metrics_port} is not in 0..65535")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"log_level: {self.log_level!r} is not debug/info/warning/error")


Setup = Callable[[grpc.aio.Server], Awaitable[Sequence[str]]]


MIN_PING_SECONDS = 5  # servers accept a client's pings this often; faster ones are refused


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Channel options of a server (message limits, keepalive tolerance)."""
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_SECONDS * 1000),
    ]


def channel_options(
    keepalive_seconds: float, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> list[tuple[str, int]]:
    """Options of a channel from one service to another: the services' message limit both ways
    (gRPC clients otherwise refuse replies over 4 MiB) and keepalive_options."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *keepalive_options(keepalive_seconds),
    ]


def keepalive_options(every_seconds: float) -> list[tuple[str, int]]:
    """Client channel options that notice a peer gone silently (no reset: a lost node, a dropped
    route) within 1.5 x `every_seconds`: a ping goes out every `every_seconds` (at least
    MIN_PING_SECONDS), and a connection whose ping stays unanswered for half of that is closed,
    failing its calls with UNAVAILABLE. gRPC core enforces the ping timeout; the keepalive
    timeout alone closes nothing."""
    timeout = int(every_seconds * 500)
    return [
        ("grpc.keepalive_time_ms", int(every_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", timeout),
        ("grpc.http2.ping_timeout_ms", timeout),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def serve(
    config: ServerConfig,
    service: str,
    setup: Setup,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT), then shut down gracefully.

    `setup` registers the servicers on the server and returns the names of the services it
    added (for health); it may also start background tasks.
    """
    server = grpc.aio.server(interceptors=list(interceptors), options=server_options(config))
    names = list(await setup(server))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.host)
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={"address": f"{config.host}:{port}", "metrics_port": config.metrics_port},
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": config.grace_seconds})
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.grace_seconds)
    if on_shutdown is not None:
        await on_shutdown()
    log.info("stopped")


def run_server(
    config: ServerConfig,
    service: str,
    setup: Setup,
    **kwargs: object,
) -> None:
    """Process entry point: logging, then `serve` on a fresh event loop."""
    die_with_launcher()
    setup_logging(service, config.log_level)
    log.info("config", extra={k: str(v) for k, v in _public_fields(config).items()})
    try:
        asyncio.run(serve(config, service, setup, **kwargs))  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass


def _public_fields(config: ServerConfig) -> dict[str, object]:
    """Config values safe to log (anything that looks like a secret is masked)."""
    secret = ("key", "secret", "token", "password")
    return {
        f.name: ("***" if any(s in f.name for s in secret) else getattr(config, f.name))
        for f in dataclasses.fields(config)
    }
