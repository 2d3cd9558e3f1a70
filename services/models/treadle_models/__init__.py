"""The torch side that trainer and sampler share: model sources, LoRA adapters, and logprobs."""

from treadle_models.logprobs import target_logprobs
from treadle_models.lora import LoraSpec, peft_lora_config
from treadle_models.sources import (
    ModelSpec,
    UnknownModelError,
    load_model,
    load_tokenizer,
    model_spec,
)

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
