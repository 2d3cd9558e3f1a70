"""Entry point of the trainer process (`treadle-trainer`, or `python -m treadle_trainer`)."""

from __future__ import annotations

from treadle_runtime.config import load_config_or_exit
from treadle_runtime.server import run_server
from treadle_trainer.config import TrainerConfig
from treadle_trainer.service import TrainerApp


def main() -> None:
    """Load the config from flags and environment, then serve until SIGTERM."""
    config = load_config_or_exit(TrainerConfig, service="trainer")
    app = TrainerApp(config)
    run_server(config, "trainer", app.setup, on_shutdown=app.close)


if __name__ == "__main__":
    main()
