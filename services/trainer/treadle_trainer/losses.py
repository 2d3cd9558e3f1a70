"""Tinker's loss family, per token, on [N, T] tensors of one op's datums.

The losses' names, inputs and config keys are the contract's table (treadle.contract.losses,
whose docstring has the formulas); this module holds their torch functions, keyed by those
names. `RUNS` is what this trainer runs, and what its capability reports.

An op's loss is the plain SUM over its tokens and datums (no normalisation), so the
gradient of a sum of ops' losses gives each adapter exactly its own gradient. Tokens with A = 0
(prompt tokens in RL data, which carry q = 0) get r = 1 in the loss so that exp never sees a
huge log-ratio there; `ratio:mean` and `clip_fraction:mean` are taken over the tokens with
A != 0 (all tokens if there are none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from treadle.contract import losses as contract
from treadle.contract.losses import BETA, CLIP_HIGH, CLIP_LOW


@dataclass(frozen=True)
class LossInputs:
    """One op's per-token inputs, [N, T] (right-padded datums, zeros on padding) or [1, ΣT]
    (datums laid end to end). An optional input a datum does not carry is NaN on its tokens
    (inputs are finite, so NaN means "not given")."""

    mask_NT: torch.Tensor  # 1.0 on real tokens, 0.0 on padding
    weights_NT: torch.Tensor
    advantages_NT: torch.Tensor
    sampler_logprobs_NT: torch.Tensor
    clip_low_NT: torch.Tensor  # per-token clip_low_threshold; NaN: the config's
    clip_high_NT: torch.Tensor  # per-token clip_high_threshold; NaN: the config's

    def narrow(self, offset: int, n: int) -> LossInputs:
        """The inputs of tokens [offset, offset + n) of every row."""
        parts: dict[str, Any] = {
            f.name: getattr(self, f.name).narrow(1, offset, n) for f in fields(self)
        }
        return LossInputs(**parts)


@dataclass(frozen=True)
class TokenLosses:
    """Per-token loss (0 on padding) and, for ratio losses, the ratio and clip indicator."""

    loss_NT: torch.Tensor
    ratio_NT: torch.Tensor | None = None  # detached exp(lp - q)
    clipped_NT: torch.Tensor | None = None  # bool: the token's ratio was clipped


LossFn = Callable[[torch.Tensor, LossInputs, Mapping[str, float]], TokenLosses]


def _ratio(lp_NT: torch.Tensor, x: LossInputs) -> torch.Tensor:
    active = (x.advantages_NT != 0) & (x.mask_NT > 0)
    log_ratio = torch.where(active, lp_NT - x.sampler_logprobs_NT, torch.zeros_like(lp_NT))
    return torch.exp(log_ratio)


def _true_ratio(lp_NT: torch.Tensor, x: LossInputs) -> torch.Tensor:
    return torch.exp(lp_NT.detach() - x.sampler_logprobs_NT)


def _thresholds(x: LossInputs, config: Mapping[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's (lo, hi): its datum's per-token thresholds where given, else the config's."""
    low = torch.where(x.clip_low_NT.isnan(), config[CLIP_LOW], x.clip_low_NT)
    high = torch.where(x.clip_high_NT.isnan(), config[CLIP_HIGH], x.clip_high_NT)
    return low, high


def cross_entropy(lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]) -> TokenLosses:
    """-w·lp"""
    return TokenLosses(loss_NT=-(x.weights_NT * lp_NT) * x.mask_NT)


def importance_sampling(
    lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]
) -> TokenLosses:
    """-r·A"""
    loss = -(_ratio(lp_NT, x) * x.advantages_NT)
    clipped = torch.zeros_like(lp_NT, dtype=torch.bool)
    return TokenLosses(loss * x.mask_NT, _true_ratio(lp_NT, x), clipped)


def ppo(lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]) -> TokenLosses:
    """-min(r·A, clip(r, lo, hi)·A); lo, hi per token where the datum carries them."""
    ratio = _ratio(lp_NT, x)
    low, high = _thresholds(x, config)
    unclipped = ratio * x.advantages_NT
    clipped = torch.clamp(ratio, low, high) * x.advantages_NT
    loss = -torch.minimum(unclipped, clipped)
    return TokenLosses(loss * x.mask_NT, _true_ratio(lp_NT, x), (clipped < unclipped).detach())


def cispo(lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]) -> TokenLosses:
    """-sg(clip(r, lo, hi))·lp·A; lo, hi per token where the datum carries them."""
    ratio = _ratio(lp_NT, x).detach()
    low, high = _thresholds(x, config)
    loss = -(torch.clamp(ratio, low, high) * lp_NT * x.advantages_NT)
    return TokenLosses(loss * x.mask_NT, _true_ratio(lp_NT, x), (ratio < low) | (ratio > high))


def dro(lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]) -> TokenLosses:
    """-(lp·A - ½·β·(lp - q)²)"""
    penalty = 0.5 * config[BETA] * (lp_NT - x.sampler_logprobs_NT) ** 2
    return TokenLosses(loss_NT=-(lp_NT * x.advantages_NT - penalty) * x.mask_NT)


FUNCTIONS: Mapping[str, LossFn] = {
    contract.CROSS_ENTROPY: cross_entropy,
    contract.IMPORTANCE_SAMPLING: importance_sampling,
    contract.PPO: ppo,
    contract.CISPO: cispo,
    contract.DRO: dro,
}
RUNS = tuple(name for name in contract.LOSSES if name in FUNCTIONS)


def loss_metrics(loss_fn: str, losses: TokenLosses, x: LossInputs) -> dict[str, float]:
    """`loss:sum`, plus `ratio:mean` and `clip_fraction:mean` for the ratio losses."""
    metrics = {"loss:sum": float(losses.loss_NT.detach().double().sum())}
    if contract.LOSSES[loss_fn].ratio_metrics and losses.ratio_NT is not None:
        assert losses.clipped_NT is not None
        tokens = (x.mask_NT > 0) & (x.advantages_NT != 0)
        if not bool(tokens.any()):
            tokens = x.mask_NT > 0
        count = max(int(tokens.sum()), 1)
        metrics["ratio:mean"] = float(losses.ratio_NT[tokens].double().sum()) / count
        metrics["clip_fraction:mean"] = float(losses.clipped_NT[tokens].sum()) / count
    return metrics
