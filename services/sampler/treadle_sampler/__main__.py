"""Entry point of the `treadle-sampler` console script."""

from __future__ import annotations

from treadle_runtime.config import load_config_or_exit
from treadle_runtime.server import run_server
from treadle_sampler.config import SamplerConfig
from treadle_sampler.service import build


def main() -> None:
    """Load the config from flags and environment, then serve until SIGTERM or SIGINT."""
    config = load_config_or_exit(SamplerConfig, service="sampler")
    setup, shutdown = build(config)
    run_server(config, "sampler", setup, on_shutdown=shutdown)


if __name__ == "__main__":
    main()
