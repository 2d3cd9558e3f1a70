"""One scheduler process: the key table, the quotas and the public servicer, wired together.

The API key interceptor authenticates every call before it reaches the servicer; `setup`
connects to the trainers, samplers and checkpoints service, `close` lets go of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from treadle.v1 import scheduler_pb2_grpc
from treadle_runtime.auth import ApiKeyInterceptor, ApiKeys, parse_api_keys
from treadle_runtime.config import ConfigError
from treadle_scheduler.config import SchedulerConfig
from treadle_scheduler.quotas import Limits, Quotas
from treadle_scheduler.service import TreadleService

SERVICE_NAME = "treadle.v1.Treadle"


class SchedulerApp:
    """The scheduler as a treadle_runtime.server.App."""

    def __init__(self, config: SchedulerConfig, keys: ApiKeys | None = None) -> None:
        """ConfigError when the keys or quotas files cannot be used; `keys`, when given, stands
        in for the configured ones (tests)."""
        try:
            keys = keys or ApiKeys(parse_api_keys(config.api_keys, config.api_keys_file))
            limits = Limits(config.quota_max_models, config.quota_max_queued_tokens)
            quotas = Quotas.from_file(limits, config.quotas_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        self.service = TreadleService(config, keys, quotas)
        self.interceptors: Sequence[grpc.aio.ServerInterceptor] = [ApiKeyInterceptor(keys)]

    async def setup(self, server: grpc.aio.Server) -> list[str]:
        """Register the servicer and connect to the peers."""
        scheduler_pb2_grpc.add_TreadleServicer_to_server(self.service, server)
        await self.service.start()
        return [SERVICE_NAME]

    async def close(self) -> None:
        """Stop the cycle loops and close the peers' channels."""
        await self.service.stop()
