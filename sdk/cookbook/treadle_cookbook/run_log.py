"""What every recipe records: metrics as JSONL (one object per step), a progress bar, and a PNG
plot of the curves. The JSONL file is the source of truth; the plot is drawn from it."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


class RunLog:
    """Metrics of one run in `log_dir/metrics.jsonl`, with a progress bar over `total` steps."""

    def __init__(self, log_dir: str | Path, total: int, description: str = "") -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._file = self.path.open("a")
        self._started = time.monotonic()
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit="step", dynamic_ncols=True)

    def log(self, step: int, **metrics: float) -> None:
        """Record one step's metrics and advance the bar, showing a few of them."""
        entry = {"step": step, "time": round(time.monotonic() - self._started, 3), **metrics}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        shown = {k: f"{v:.4g}" for k, v in list(metrics.items())[:4] if isinstance(v, float)}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def note(self, text: str) -> None:
        """A line of text above the progress bar."""
        self.bar.write(text)

    def close(self) -> None:
        """Close the bar and the file."""
        self.bar.close()
        self._file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(path: str | Path, out: str | Path, keys: Sequence[str], title: str = "") -> Path:
    """A PNG with one panel per metric key, step on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = read_metrics(path)
    keys = [k for k in keys if any(k in e for e in entries)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.2 * max(1, len(keys)), 3.2))
    for axis, key in zip(_as_list(axes), keys, strict=False):
        points = [(e["step"], e[key]) for e in entries if _finite(e.get(key))]
        if points:
            axis.plot(*zip(*points, strict=True), marker=".")
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _as_list(axes: Any) -> Iterable[Any]:
    return list(axes.flat) if hasattr(axes, "flat") else [axes]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
