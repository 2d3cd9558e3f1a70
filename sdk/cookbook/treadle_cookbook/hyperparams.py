"""Learning rates for LoRA fine-tuning, by Tinker's published formula:

    LR(model) = 5e-5 · 10 · (2000 / hidden_size) ^ P_family,   P_llama = 0.781, P_qwen = 0.0775

(5e-5 is the full fine-tuning base rate, 10 the LoRA multiplier; the formula does not depend on
the LoRA rank). SmolLM2 is a Llama-architecture model. Hidden sizes of known models are listed
here so that nothing is downloaded; pass `hidden_size` for any other model.
"""

from __future__ import annotations

BASE_LR = 5e-5
LORA_MULTIPLIER = 10.0
FAMILY_EXPONENT = {"llama": 0.781, "qwen": 0.0775}

HIDDEN_SIZE = {
    "treadle/tiny-llama": 128,
    "treadle/tiny-qwen2": 128,
    "treadle/tiny-qwen3": 128,
    "HuggingFaceTB/SmolLM2-135M": 576,
    "HuggingFaceTB/SmolLM2-135M-Instruct": 576,
    "HuggingFaceTB/SmolLM2-360M": 960,
    "HuggingFaceTB/SmolLM2-360M-Instruct": 960,
    "HuggingFaceTB/SmolLM2-1.7B": 2048,
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": 2048,
    "meta-llama/Llama-3.2-1B": 2048,
    "meta-llama/Llama-3.2-1B-Instruct": 2048,
    "meta-llama/Llama-3.2-3B": 3072,
    "meta-llama/Llama-3.2-3B-Instruct": 3072,
    "meta-llama/Llama-3.1-8B": 4096,
    "meta-llama/Llama-3.1-8B-Instruct": 4096,
    "meta-llama/Llama-3.1-70B": 8192,
    "meta-llama/Llama-3.3-70B-Instruct": 8192,
    "Qwen/Qwen2.5-0.5B-Instruct": 896,
    "Qwen/Qwen2.5-1.5B-Instruct": 1536,
    "Qwen/Qwen2.5-3B-Instruct": 2048,
    "Qwen/Qwen2.5-7B-Instruct": 3584,
    "Qwen/Qwen3-0.6B": 1024,
    "Qwen/Qwen3-1.7B": 2048,
    "Qwen/Qwen3-4B": 2560,
    "Qwen/Qwen3-8B": 4096,
    "Qwen/Qwen3-8B-Base": 4096,
    "Qwen/Qwen3-14B": 5120,
    "Qwen/Qwen3-32B": 5120,
}


def model_family(model_name: str) -> str:
    """`llama` or `qwen`, from the model's name (SmolLM2 is a Llama-architecture model)."""
    lowered = model_name.lower()
    if "qwen" in lowered:
        return "qwen"
    if "llama" in lowered or "smollm" in lowered:
        return "llama"
    raise ValueError(
        f"model_name: no learning-rate formula for the family of {model_name!r} "
        f"(known families: {', '.join(FAMILY_EXPONENT)}); pass family="
    )


def get_hidden_size(model_name: str) -> int:
    """The hidden size of a known model."""
    if model_name not in HIDDEN_SIZE:
        raise ValueError(f"model_name: hidden size of {model_name!r} unknown; pass hidden_size=")
    return HIDDEN_SIZE[model_name]


def get_lora_lr_over_full_finetune_lr(model_name: str) -> float:
    """How much larger a LoRA learning rate is than a full fine-tuning one (10, any rank)."""
    return LORA_MULTIPLIER


def get_lr(
    model_name: str,
    is_lora: bool = True,
    hidden_size: int | None = None,
    family: str | None = None,
) -> float:
    """The recommended learning rate: 5e-5 · (10 if LoRA) · (2000 / hidden_size) ^ P_family."""
    family = family or model_family(model_name)
    if family not in FAMILY_EXPONENT:
        raise ValueError(f"family: unknown family {family!r} (known: {', '.join(FAMILY_EXPONENT)})")
    hidden = hidden_size if hidden_size is not None else get_hidden_size(model_name)
    if hidden <= 0:
        raise ValueError(f"hidden_size: must be positive, got {hidden}")
    lr = BASE_LR * (get_lora_lr_over_full_finetune_lr(model_name) if is_lora else 1.0)
    return lr * (2000 / hidden) ** FAMILY_EXPONENT[family]
