"""AdamW for one adapter, written out so its state is plain tensors that export bit-exactly.

Each optim_step may bring different hyperparameters (Tinker passes AdamParams per call), so there
is no optimizer object with param_groups: the update is the single-tensor form of
`torch.optim.AdamW` with decoupled weight decay and bias correction,

    g ← g · min(1, clip / (‖g‖ + 1e-6))          (when grad_clip_norm > 0; ‖g‖ over the adapter)
    p ← p · (1 − lr·wd)
    m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
    p ← p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + eps)

A parameter that received no gradient since the last step is updated with g = 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

EXP_AVG = "exp_avg"
EXP_AVG_SQ = "exp_avg_sq"


@dataclass(frozen=True)
class AdamConfig:
    """One step's hyperparameters (Tinker's defaults)."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0  # 0 = off


class AdamState:
    """First and second moments of every parameter of one adapter, and the step count."""

    def __init__(self, params: Mapping[str, torch.Tensor]) -> None:
        self.step = 0
        self.exp_avg = {key: torch.zeros_like(p, memory_format=torch.contiguous_format)
                        for key, p in params.items()}  # fmt: skip
        self.exp_avg_sq = {key: torch.zeros_like(p, memory_format=torch.contiguous_format)
                           for key, p in params.items()}  # fmt: skip

    def reset(self) -> None:
        """Forget the moments and the step count."""
        self.step = 0
        for tensor in (*self.exp_avg.values(), *self.exp_avg_sq.values()):
            tensor.zero_()

    @torch.no_grad()
    def apply(self, params: Mapping[str, torch.nn.Parameter], config: AdamConfig) -> float:
        """Apply one step from the params' accumulated .grad; returns the gradient norm."""
        grads = {
            key: (p.grad if p.grad is not None else torch.zeros_like(p))
            for key, p in params.items()
        }
        norm = global_norm(list(grads.values()))
        scale = 1.0
        if config.grad_clip_norm > 0:
            scale = min(1.0, config.grad_clip_norm / (norm + 1e-6))
        self.step += 1
        bias1 = 1 - config.beta1**self.step
        bias2_sqrt = math.sqrt(1 - config.beta2**self.step)
        for key, param in params.items():
            grad = grads[key] if scale == 1.0 else grads[key] * scale
            exp_avg, exp_avg_sq = self.exp_avg[key], self.exp_avg_sq[key]
            param.mul_(1 - config.learning_rate * config.weight_decay)
            exp_avg.lerp_(grad, 1 - config.beta1)
            exp_avg_sq.mul_(config.beta2).addcmul_(grad, grad, value=1 - config.beta2)
            denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(config.eps)
            param.addcdiv_(exp_avg, denom, value=-config.learning_rate / bias1)
        return norm

    def tensors(self) -> dict[str, torch.Tensor]:
        """The moments as `{key}.exp_avg` / `{key}.exp_avg_sq` tensors (for a checkpoint)."""
        out = {f"{key}.{EXP_AVG}": t for key, t in self.exp_avg.items()}
        out.update({f"{key}.{EXP_AVG_SQ}": t for key, t in self.exp_avg_sq.items()})
        return out

    def load(self, tensors: Mapping[str, torch.Tensor], step: int) -> None:
        """Restore moments written by `tensors`; ValueError if they do not fit this adapter."""
        expected = set(self.tensors())
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ValueError(
                f"optimizer state does not fit the adapter (missing {missing[:3]}, "
                f"unexpected {extra[:3]})"
            )
        for name, tensor in self.tensors().items():
            if tensors[name].shape != tensor.shape:
                raise ValueError(f"optimizer state {name}: shape {list(tensors[name].shape)}")
        for name, tensor in self.tensors().items():
            tensor.copy_(tensors[name])
        self.step = step


def global_norm(grads: list[torch.Tensor]) -> float:
    """L2 norm of all gradients together (as torch.nn.utils.clip_grad_norm_ computes it)."""
    if not grads:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g, 2.0) for g in grads])
    return float(torch.linalg.vector_norm(norms, 2.0))
