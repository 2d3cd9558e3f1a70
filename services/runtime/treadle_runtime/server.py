"""gRPC server bootstrap shared by every service: bind, health, metrics, graceful shutdown.

Every service is an `App` (treadle_<service>/app.py) and its `__main__` is the same two lines:
load the config, `run_app`. `run_app` is the whole life of a service process: it sets up JSON
logging, builds the App, starts the Prometheus endpoint, registers the App's servicers and the
standard gRPC health service, serves until SIGTERM or SIGINT, then marks itself NOT_SERVING,
lets in-flight calls finish within the grace period, and closes the App.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from treadle.contract.transport import MAX_MESSAGE_BYTES, server_options
from treadle_runtime.config import ConfigError
from treadle_runtime.lifetime import die_with_launcher
from treadle_runtime.logs import setup_logging

log = logging.getLogger(__name__)


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


class App(Protocol):
    """One service's process, as every service builds it (treadle_<service>/app.py): built
    from its config, `setup` registers its servicers on the server (and may start background
    work) and returns the gRPC service names it added; `close` releases what it holds, after
    the server has stopped, and is safe after a `setup` that failed half way."""

    interceptors: Sequence[grpc.aio.ServerInterceptor]

    async def setup(self, server: grpc.aio.Server) -> Sequence[str]: ...

    async def close(self) -> None: ...


C = TypeVar("C", bound=ServerConfig)


async def serve(config: ServerConfig, app: App, stop: asyncio.Event | None = None) -> None:
    """Serve `app` until `stop` is set (or SIGTERM/SIGINT), then shut down gracefully: health
    NOT_SERVING, in-flight calls finish within the grace period, then `app.close()`."""
    server = grpc.aio.server(
        interceptors=list(app.interceptors), options=server_options(config.max_message_bytes)
    )
    try:
        names = list(await app.setup(server))
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
    finally:
        await app.close()
    log.info("stopped")


def run_app(service: str, config: C, make_app: Callable[[C], App]) -> None:
    """A service process's whole life: logging, the App built from `config` (a ConfigError,
    such as an unreadable keys file, ends the process with one line and status 2), then
    `serve` on a fresh event loop until SIGTERM or SIGINT."""
    die_with_launcher()
    setup_logging(service, config.log_level)
    log.info("config", extra={k: str(v) for k, v in _public_fields(config).items()})
    try:
        app = make_app(config)
    except ConfigError as exc:
        print(f"treadle-{service}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        asyncio.run(serve(config, app))
    except KeyboardInterrupt:
        pass


def _public_fields(config: ServerConfig) -> dict[str, object]:
    """Config values safe to log (anything that looks like a secret is masked)."""
    secret = ("key", "secret", "token", "password")
    return {
        f.name: ("***" if any(s in f.name for s in secret) else getattr(config, f.name))
        for f in dataclasses.fields(config)
    }
