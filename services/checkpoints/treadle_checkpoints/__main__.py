"""Entry point: `treadle-checkpoints` (or `python -m treadle_checkpoints`).

The process first asks glibc to keep freed memory for reuse (treadle_runtime.memory): every piece
of a checkpoint passes through short-lived buffers (S3 reads, wire bytes, gRPC slices).
"""

from __future__ import annotations

from collections.abc import Sequence

from treadle_checkpoints.app import CheckpointsApp
from treadle_checkpoints.config import CheckpointsConfig
from treadle_runtime.config import load_config_or_exit
from treadle_runtime.memory import keep_freed_memory
from treadle_runtime.server import run_app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the checkpoints service until SIGTERM/SIGINT."""
    config = load_config_or_exit(CheckpointsConfig, service="checkpoints", argv=argv)
    keep_freed_memory(256 << 20)
    run_app("checkpoints", config, CheckpointsApp)


if __name__ == "__main__":
    main()
