"""Entry point of the trainer process (`treadle-trainer`, or `python -m treadle_trainer`)."""

from __future__ import annotations

from collections.abc import Sequence

from treadle_runtime.config import load_config_or_exit
from treadle_runtime.server import run_app
from treadle_trainer.app import TrainerApp
from treadle_trainer.config import TrainerConfig


def main(argv: Sequence[str] | None = None) -> None:
    """Load the config from flags and environment, then serve until SIGTERM."""
    config = load_config_or_exit(TrainerConfig, service="trainer", argv=argv)
    run_app("trainer", config, TrainerApp)


if __name__ == "__main__":
    main()
