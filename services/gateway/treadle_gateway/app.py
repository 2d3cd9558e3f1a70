"""The gateway as an ASGI app: the tinker SDK's routes, over one Gateway (gateway.py).

Built by `create_app(config)`; uvicorn serves it (`python -m treadle_gateway`), and tests run it
the same way on a free port. Requests pass the metrics and body-limit middleware, then a route
(routes/); every error leaves as the SDK's JSON error body (middleware.py). The OpenAPI schema is
at /openapi.json.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from treadle_gateway import metrics
from treadle_gateway.config import GatewayConfig
from treadle_gateway.gateway import Gateway
from treadle_gateway.middleware import BodyLimits, install_error_handlers
from treadle_gateway.routes import checkpoints, futures, sampling, service, training


def create_app(config: GatewayConfig) -> FastAPI:
    """The gateway app for `config` (it connects to the scheduler when it starts)."""
    gateway = Gateway(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        metrics.SESSIONS.set_function(lambda: len(gateway.sessions))
        metrics.FUTURES.set_function(lambda: len(gateway.futures))
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="Treadle gateway",
        summary="The official tinker SDK's HTTP protocol, served by a Treadle mesh",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.gateway = gateway
    for routes in (service, training, sampling, futures, checkpoints):
        app.include_router(routes.router)
    install_error_handlers(app)
    app.add_middleware(BodyLimits, max_body_bytes=config.max_body_bytes)
    app.add_middleware(metrics.RequestMetrics)
    return app
