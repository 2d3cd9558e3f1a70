"""Entry point: `treadle-scheduler` (or `python -m treadle_scheduler`)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from treadle.v1 import scheduler_pb2_grpc
from treadle_runtime.auth import ApiKeyInterceptor, ApiKeys, parse_api_keys
from treadle_runtime.config import ConfigError, load_config_or_exit
from treadle_runtime.server import run_server
from treadle_scheduler.config import SchedulerConfig
from treadle_scheduler.quotas import Limits, Quotas
from treadle_scheduler.service import TreadleService

SERVICE_NAME = "treadle.v1.Treadle"


def build(config: SchedulerConfig) -> tuple[TreadleService, ApiKeys]:
    """The servicer and its key table for `config` (ConfigError on unusable keys)."""
    try:
        keys = ApiKeys(parse_api_keys(config.api_keys, config.api_keys_file))
        limits = Limits(config.quota_max_models, config.quota_max_queued_tokens)
        quotas = Quotas.from_file(limits, config.quotas_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return TreadleService(config, keys, quotas), keys


def main(argv: Sequence[str] | None = None) -> None:
    """Run the scheduler until SIGTERM/SIGINT."""
    config = load_config_or_exit(SchedulerConfig, service="scheduler", argv=argv)
    try:
        service, keys = build(config)
    except ConfigError as exc:
        raise SystemExit(f"treadle-scheduler: error: {exc}") from None

    async def setup(server: grpc.aio.Server) -> list[str]:
        scheduler_pb2_grpc.add_TreadleServicer_to_server(service, server)
        await service.start()
        return [SERVICE_NAME]

    run_server(
        config,
        "scheduler",
        setup,
        interceptors=[ApiKeyInterceptor(keys)],
        on_shutdown=service.stop,
    )


if __name__ == "__main__":
    main()
