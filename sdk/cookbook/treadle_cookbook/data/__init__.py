"""Data files shipped with the cookbook (nothing is downloaded): chat conversations for SFT and
evaluation tasks. `python -m treadle_cookbook.data.generate` writes the generated ones again."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent


def data_path(name: str) -> Path:
    """The path of a shipped data file, e.g. `data_path("chat_sft_train.jsonl")`."""
    path = DATA_DIR / name
    if not path.exists():
        known = sorted(str(p.relative_to(DATA_DIR)) for p in DATA_DIR.rglob("*.jsonl"))
        raise FileNotFoundError(f"{name}: no such shipped data file (shipped: {', '.join(known)})")
    return path
