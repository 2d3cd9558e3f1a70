"""LoRA configuration: Tinker's switches (train_attn, train_mlp, train_unembed) as a PEFT config.

Target modules are the Llama/Qwen2/Qwen3 projection names; alpha defaults to the rank (scaling
1.0). Dropout is always 0 so that an adapter's forward is deterministic and batches of mixed
adapters are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig

ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
UNEMBED_MODULES = ("lm_head",)
SUPPORTED_RANKS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class LoraSpec:
    """The LoRA configuration of one training model."""

    rank: int = 32
    alpha: float | None = None  # None means alpha = rank
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True

    @property
    def effective_alpha(self) -> float:
        """alpha, defaulting to the rank."""
        return float(self.rank if self.alpha is None else self.alpha)

    def target_modules(self) -> list[str]:
        """Module names adapted by this spec."""
        modules: list[str] = []
        if self.train_attn:
            modules += ATTN_MODULES
        if self.train_mlp:
            modules += MLP_MODULES
        if self.train_unembed:
            modules += UNEMBED_MODULES
        return modules

    def validate(self) -> None:
        """ValueError naming the field when the spec cannot be built."""
        if self.rank not in SUPPORTED_RANKS:
            raise ValueError(f"lora_config.rank: {self.rank} is not one of {SUPPORTED_RANKS}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"lora_config.alpha: must be > 0, got {self.alpha}")
        if not self.target_modules():
            raise ValueError(
                "lora_config: at least one of train_attn, train_mlp, train_unembed must be true"
            )


def peft_lora_config(spec: LoraSpec) -> LoraConfig:
    """The PEFT LoraConfig of `spec` (also what a saved adapter_config.json holds)."""
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.effective_alpha,  # type: ignore[arg-type]  # peft says int; it divides by it
        target_modules=spec.target_modules(),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
