"""The torch side that trainer and sampler share: model sources, LoRA adapters, and logprobs.

The names below are imported on first use, not with the package: `python -m
treadle_models.prepare` on a warm cache, and anything else that needs only `treadle_models.cache`,
then start without importing torch (seconds on a small machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from treadle_models.logprobs import target_logprobs
    from treadle_models.lora import LoraSpec, peft_lora_config
    from treadle_models.sources import (
        ModelSpec,
        UnknownModelError,
        load_model,
        load_tokenizer,
        model_spec,
    )

_HOMES = {
    "target_logprobs": "treadle_models.logprobs",
    "LoraSpec": "treadle_models.lora",
    "peft_lora_config": "treadle_models.lora",
    "ModelSpec": "treadle_models.sources",
    "UnknownModelError": "treadle_models.sources",
    "load_model": "treadle_models.sources",
    "load_tokenizer": "treadle_models.sources",
    "model_spec": "treadle_models.sources",
}

__all__ = [
    "LoraSpec",
    "ModelSpec",
    "UnknownModelError",
    "load_model",
    "load_tokenizer",
    "model_spec",
    "peft_lora_config",
    "target_logprobs",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` when it is first asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'treadle_models' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
