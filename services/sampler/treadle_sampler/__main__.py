"""Entry point of the `treadle-sampler` console script."""

from __future__ import annotations

from collections.abc import Sequence

from treadle_runtime.config import load_config_or_exit
from treadle_runtime.server import run_app
from treadle_sampler.app import SamplerApp
from treadle_sampler.config import SamplerConfig


def main(argv: Sequence[str] | None = None) -> None:
    """Load the config from flags and environment, then serve until SIGTERM or SIGINT."""
    config = load_config_or_exit(SamplerConfig, service="sampler", argv=argv)
    run_app("sampler", config, SamplerApp)


if __name__ == "__main__":
    main()
