"""Learning-rate schedules: the multiplier of the base rate at a step.

    constant: 1
    linear:   1 − step / total                      (reaches 0 after the last step)
    cosine:   ½ · (1 + cos(π · step / total))

each after an optional linear warmup from 0 over `warmup_steps`.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def lr_multiplier(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The factor of the base learning rate at `step` (0-based) of `total_steps`."""
    if schedule not in SCHEDULES:
        raise ValueError(
            f"lr_schedule: unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})"
        )
    if total_steps < 1:
        raise ValueError(f"total_steps: must be >= 1, got {total_steps}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
