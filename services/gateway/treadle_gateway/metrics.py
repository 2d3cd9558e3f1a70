"""The gateway's Prometheus metrics: requests by route and status, latency, sessions, futures.

Routes are labelled by their template (`/api/v1/training_runs/{run_id}`), not the path a client
sent, so the label set stays small whatever ids arrive; a request no route matched is `unmatched`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from treadle_gateway.middleware import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "treadle_gateway_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
LATENCY = Histogram(
    "treadle_gateway_request_duration_seconds",
    "Time to answer an HTTP request (retrieve_future includes its long-poll wait)",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SESSIONS = Gauge("treadle_gateway_sessions", "Tinker sessions held")
FUTURES = Gauge(
    "treadle_gateway_futures", "Futures held (running, or finished and not yet dropped)"
)


class RequestMetrics:
    """ASGI middleware counting and timing every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", "unmatched")
            REQUESTS.labels(name, scope["method"], str(status[0])).inc()
            LATENCY.labels(name).observe(time.perf_counter() - started)
