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

from treadle.contract.optim import ADAM_DEFAULTS

EXP_AVG = "exp_avg"
EXP_AVG_SQ = "exp_avg_sq"


@dataclass(frozen=True)
class AdamConfig:
    """One step's hyperparameters (Tinker's defaults, from treadle.contract.optim)."""

    learning_rate: float = ADAM_DEFAULTS["learning_rate"]
    beta1: float = ADAM_DEFAULTS["beta1"]
    beta2: float = ADAM_DEFAULTS["beta2"]
    eps: float = ADAM_DEFAULTS["eps"]
    weight_decay: float = ADAM_DEFAULTS["weight_decay"]
    grad_clip_norm: float = ADAM_DEFAULTS["grad_clip_norm"]  # 0 = off


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
        """Apply one step from the params' accumulated .grad; returns the gradient norm.

        The update runs as multi-tensor (`torch._foreach_*`) ops: the same elementwise
        arithmetic as a loop over tensors, in a handful of kernels for all of them.
        """
        keys = list(params)
        weights = [params[k].data for k in keys]
        grads: list[torch.Tensor] = []
        for key in keys:
            grad = params[key].grad
            grads.append(torch.zeros_like(params[key]) if grad is None else grad)
        exp_avg = [self.exp_avg[k] for k in keys]
        exp_avg_sq = [self.exp_avg_sq[k] for k in keys]
        norm = global_norm(grads)
        if config.grad_clip_norm > 0:
            scale = min(1.0, config.grad_clip_norm / (norm + 1e-6))
            if scale != 1.0:
                grads = list(torch._foreach_mul(grads, scale))
        self.step += 1
        bias1 = 1 - config.beta1**self.step
        bias2_sqrt = math.sqrt(1 - config.beta2**self.step)
        torch._foreach_mul_(weights, 1 - config.learning_rate * config.weight_decay)
        torch._foreach_lerp_(exp_avg, grads, 1 - config.beta1)
        torch._foreach_mul_(exp_avg_sq, config.beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - config.beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, config.eps)
        torch._foreach_addcdiv_(weights, exp_avg, denom, value=-config.learning_rate / bias1)
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
    norms = torch.stack(torch._foreach_norm(grads, 2.0))
    return float(torch.linalg.vector_norm(norms, 2.0))
