"""The run's checkpoint log, `log_dir/checkpoints.jsonl`: one line per saved checkpoint, written
only once the save has succeeded, so its last `state_path` is always a checkpoint to resume from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHECKPOINTS_FILE = "checkpoints.jsonl"


def record_checkpoint(log_dir: str | Path, entry: dict[str, Any]) -> None:
    """Append a saved checkpoint (`name`, `step`, `state_path` and/or `sampler_path`, ...)."""
    path = Path(log_dir) / CHECKPOINTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(json.dumps(entry) + "\n")


def read_checkpoints(log_dir: str | Path) -> list[dict[str, Any]]:
    """Every recorded checkpoint, oldest first."""
    path = Path(log_dir) / CHECKPOINTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_checkpoint(log_dir: str | Path, key: str = "state_path") -> dict[str, Any] | None:
    """The newest recorded checkpoint that has `key`, or None."""
    return next((e for e in reversed(read_checkpoints(log_dir)) if key in e), None)
