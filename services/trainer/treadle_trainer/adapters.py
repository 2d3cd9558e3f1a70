"""One training model's adapter on the trainer: weights, gradient accumulator, AdamW state.

Everything an adapter owns is a handful of named tensors, so residency can move it as a unit:
`tensors()` lists them (weights, pending gradients, both Adam moments), `drop_tensors()` frees
them while keeping the Parameter objects and the step count, and `restore_tensors()` puts the
exact same bytes back. The step count and the configuration never leave the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from treadle_models.lora import LoraSpec
from treadle_trainer.optim import AdamState

WEIGHT, GRAD, EXP_AVG, EXP_AVG_SQ = "weight", "grad", "exp_avg", "exp_avg_sq"
_EMPTY = torch.empty(0)


@dataclass
class Adapter:
    """One training model held by this trainer (resident on the device or offloaded)."""

    model_id: str
    tenant: str
    spec: LoraSpec
    seed: int
    params: dict[str, torch.nn.Parameter]  # PEFT keys -> float32 matrices
    adam: AdamState
    trainable_params: int = 0
    resident: bool = True

    def __post_init__(self) -> None:
        self.trainable_params = self.trainable_params or sum(
            p.numel() for p in self.params.values()
        )

    @property
    def step(self) -> int:
        """Optimizer steps taken."""
        return self.adam.step

    @property
    def scale(self) -> float:
        """LoRA scaling alpha / rank."""
        return self.spec.effective_alpha / self.spec.rank

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the adapter owns, as `{kind}:{key}` (gradients only where pending)."""
        out: dict[str, torch.Tensor] = {}
        for key, param in self.params.items():
            out[f"{WEIGHT}:{key}"] = param.data
            if param.grad is not None:
                out[f"{GRAD}:{key}"] = param.grad
        for key, tensor in self.adam.exp_avg.items():
            out[f"{EXP_AVG}:{key}"] = tensor
        for key, tensor in self.adam.exp_avg_sq.items():
            out[f"{EXP_AVG_SQ}:{key}"] = tensor
        return out

    def drop_tensors(self) -> None:
        """Free every tensor (after they were stored elsewhere)."""
        for param in self.params.values():
            param.data = _EMPTY
            param.grad = None
        for moments in (self.adam.exp_avg, self.adam.exp_avg_sq):
            for key in moments:
                moments[key] = _EMPTY
        self.resident = False

    def restore_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        """Put back what `tensors()` returned, on `device`."""
        for key, param in self.params.items():
            param.data = tensors[f"{WEIGHT}:{key}"].to(device)
            grad = tensors.get(f"{GRAD}:{key}")
            param.grad = None if grad is None else grad.to(device)
        for kind, moments in ((EXP_AVG, self.adam.exp_avg), (EXP_AVG_SQ, self.adam.exp_avg_sq)):
            for key in moments:
                moments[key] = tensors[f"{kind}:{key}"].to(device)
        self.resident = True
