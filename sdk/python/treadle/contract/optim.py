"""The optimizer step's hyperparameters: Tinker's Adam(W) defaults and their limits.

The SDK's AdamParams takes its defaults from here, the trainer fills the fields a request leaves
unset from here, and both check values with `check_adam`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from treadle.errors import bad_field

ADAM_DEFAULTS: Mapping[str, float] = {
    "learning_rate": 1e-4,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-12,
    "weight_decay": 0.0,  # decoupled (AdamW)
    "grad_clip_norm": 0.0,  # 0 = off
}


def check_adam(given: Mapping[str, float]) -> dict[str, float]:
    """Every hyperparameter, unset ones at their defaults, checked: finite and >= 0, betas
    below 1. ValidationError naming `adam_params.<name>`."""
    values: dict[str, float] = {}
    for name, default in ADAM_DEFAULTS.items():
        value = float(given.get(name, default))
        if not math.isfinite(value) or value < 0:
            raise bad_field(f"adam_params.{name}", f"must be finite and >= 0, got {value}")
        values[name] = value
    for name in ("beta1", "beta2"):
        if values[name] >= 1:
            raise bad_field(f"adam_params.{name}", f"must be < 1, got {values[name]}")
    return values
