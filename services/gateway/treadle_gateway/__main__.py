"""Entry point: `treadle-gateway` (or `python -m treadle_gateway`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import uvicorn
from prometheus_client import start_http_server

from treadle_gateway.app import create_app
from treadle_gateway.config import GatewayConfig
from treadle_runtime.config import load_config_or_exit
from treadle_runtime.lifetime import die_with_launcher
from treadle_runtime.logs import setup_logging

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the gateway until SIGTERM or SIGINT (in-flight requests get a few seconds)."""
    config = load_config_or_exit(GatewayConfig, service="gateway", argv=argv)
    die_with_launcher()
    setup_logging("gateway", config.log_level)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            log_level=config.log_level.lower(),
            access_log=False,
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=5,
            log_config=None,  # the service's own JSON logging
        )
    )
    log.info("serving", extra={"address": f"{config.host}:{config.port}"})
    asyncio.run(server.serve())


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
