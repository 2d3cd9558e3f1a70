"""Entry point: `treadle-scheduler` (or `python -m treadle_scheduler`)."""

from __future__ import annotations

from collections.abc import Sequence

from treadle_runtime.config import load_config_or_exit
from treadle_runtime.server import run_app
from treadle_scheduler.app import SchedulerApp
from treadle_scheduler.config import SchedulerConfig


def main(argv: Sequence[str] | None = None) -> None:
    """Run the scheduler until SIGTERM/SIGINT."""
    config = load_config_or_exit(SchedulerConfig, service="scheduler", argv=argv)
    run_app("scheduler", config, SchedulerApp)


if __name__ == "__main__":
    main()
