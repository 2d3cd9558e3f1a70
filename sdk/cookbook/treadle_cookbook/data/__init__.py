"""Data files shipped with the cookbook (nothing is downloaded): chat conversations for SFT and
evaluation tasks. `python -m treadle_cookbook.data.generate` writes the generated ones again.
Every JSONL reader goes through `jsonl_records`, so a bad line is named the same way everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

DATA_DIR = Path(__file__).parent


def data_path(name: str) -> Path:
    """The path of a shipped data file, e.g. `data_path("chat_sft_train.jsonl")`."""
    path = DATA_DIR / name
    if not path.exists():
        known = sorted(str(p.relative_to(DATA_DIR)) for p in DATA_DIR.rglob("*.jsonl"))
        raise FileNotFoundError(f"{name}: no such shipped data file (shipped: {', '.join(known)})")
    return path


def jsonl_records(path: str | Path, error: type[Exception]) -> Iterator[tuple[str, object]]:
    """(source "file:line", record) for every non-blank line of a JSONL file; a missing file or
    a line that is not JSON raises `error` naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as bad:
            raise error(f"{source}: not valid JSON ({bad.msg} at column {bad.colno})") from None
        yield source, record
