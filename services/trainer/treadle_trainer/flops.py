"""The two halves of MFU: model FLOPs of a pass, and the device's measured matmul peak.

Model FLOPs count what the computation needs, not what an implementation happens to do
(padding is not counted). For a datum of t real tokens, with P the weights of every matmul of
the base model (decoder layers and unembedding), L layers, attention width d (query heads ×
head dim) and R the adapter's LoRA parameters (Σ r·(in + out) over adapted modules):

    forward    F = 2·P·t  +  2·L·d·t²  +  2·R·t          (causal attention: half of QKᵀ and AV)
    training       2·(2·P·t) + 3·(2·L·d·t²) + 3·(2·R·t)

The base is frozen, so its backward needs input gradients only (one matmul per forward matmul);
attention and LoRA need both (twice the forward). This is lower than the 6·P·t of full
fine-tuning on purpose: MFU then says how busy the device is with work that must be done.

The peak is the best rate of a large square matmul in the model's dtype on the device itself,
measured at startup (or given in the configuration), so MFU is relative to this machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelFlops:
    """The shape of a base model as far as FLOPs go."""

    linear_params: int  # P
    layers: int  # L
    attention_width: int  # d

    def pass_flops(self, lengths: Sequence[int], lora_params: int, train: bool) -> float:
        """Model FLOPs of datums of `lengths` tokens through one adapter."""
        tokens = sum(lengths)
        dense = 2.0 * self.linear_params * tokens
        attention = sum(2.0 * self.layers * self.attention_width * t * t for t in lengths)
        lora = 2.0 * lora_params * tokens
        if train:
            return 2 * dense + 3 * attention + 3 * lora
        return dense + attention + lora


def model_flops(model: nn.Module) -> ModelFlops:
    """The ModelFlops of a Hugging Face causal LM (counting every nn.Linear weight)."""
    config: Any = model.config
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelFlops(
        linear_params=sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)),
        layers=int(config.num_hidden_layers),
        attention_width=heads * int(head_dim),
    )


def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype, size: int = 0, repeats: int = 5
) -> float:
    """Best FLOP/s of a `size`² matmul on `device` in `dtype` (size 0: 2048 CPU, 8192 GPU)."""
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(device)
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        if i:  # the first one warms up
            best = min(best, time.perf_counter() - started)
    return 2.0 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
