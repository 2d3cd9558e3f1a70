"""Tinker's loss family, per token, on right-padded [N, T] tensors of one op's datums.

With lp the learner logprob of each target token, q the sampler logprob (`logprobs` input),
A the advantage and r = exp(lp - q):

    cross_entropy        -w·lp                                   (w = `weights`, default 1)
    importance_sampling  -r·A
    ppo                  -min(r·A, clip(r, lo, hi)·A)            lo 0.8, hi 1.2 by default
    cispo                -stopgrad(clip(r, lo, hi))·lp·A         lo 0.0, hi 4.0 by default
    dro                  -(lp·A - ½·β·(lp - q)²)                 β required

An op's loss is the plain SUM of these over its tokens and datums (no normalisation), so the
gradient of a sum of ops' losses gives each adapter exactly its own gradient. Tokens with A = 0
(prompt tokens in RL data, which carry q = 0) get r = 1 in the loss so that exp never sees a
huge log-ratio there; `ratio:mean` and `clip_fraction:mean` are taken over the tokens with
A != 0 (all tokens if there are none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from treadle_runtime.errors import invalid

CLIP_LOW = "clip_low_threshold"
CLIP_HIGH = "clip_high_threshold"
BETA = "beta"


@dataclass(frozen=True)
class LossInputs:
    """One op's per-token inputs, right-padded to [N, T] (zeros on padding)."""

    mask_NT: torch.Tensor  # 1.0 on real tokens, 0.0 on padding
    weights_NT: torch.Tensor
    advantages_NT: torch.Tensor
    sampler_logprobs_NT: torch.Tensor


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
    """-min(r·A, clip(r, lo, hi)·A)"""
    ratio = _ratio(lp_NT, x)
    unclipped = ratio * x.advantages_NT
    clipped = torch.clamp(ratio, config[CLIP_LOW], config[CLIP_HIGH]) * x.advantages_NT
    loss = -torch.minimum(unclipped, clipped)
    return TokenLosses(loss * x.mask_NT, _true_ratio(lp_NT, x), (clipped < unclipped).detach())


def cispo(lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]) -> TokenLosses:
    """-stopgrad(clip(r, lo, hi))·lp·A"""
    ratio = _ratio(lp_NT, x).detach()
    low, high = config[CLIP_LOW], config[CLIP_HIGH]
    loss = -(torch.clamp(ratio, low, high) * lp_NT * x.advantages_NT)
    return TokenLosses(loss * x.mask_NT, _true_ratio(lp_NT, x), (ratio < low) | (ratio > high))


def dro(lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]) -> TokenLosses:
    """-(lp·A - ½·β·(lp - q)²)"""
    penalty = 0.5 * config[BETA] * (lp_NT - x.sampler_logprobs_NT) ** 2
    return TokenLosses(loss_NT=-(lp_NT * x.advantages_NT - penalty) * x.mask_NT)


@dataclass(frozen=True)
class LossSpec:
    """A loss: its function, the loss_fn_inputs it needs, and its config keys with defaults."""

    fn: LossFn
    inputs: tuple[str, ...]
    config: Mapping[str, float | None]  # None: the key is required
    ratio_metrics: bool = False


LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(cross_entropy, ("target_tokens",), {}),
    "importance_sampling": LossSpec(
        importance_sampling, ("target_tokens", "logprobs", "advantages"), {}, ratio_metrics=True
    ),
    "ppo": LossSpec(
        ppo,
        ("target_tokens", "logprobs", "advantages"),
        {CLIP_LOW: 0.8, CLIP_HIGH: 1.2},
        ratio_metrics=True,
    ),
    "cispo": LossSpec(
        cispo,
        ("target_tokens", "logprobs", "advantages"),
        {CLIP_LOW: 0.0, CLIP_HIGH: 4.0},
        ratio_metrics=True,
    ),
    "dro": LossSpec(dro, ("target_tokens", "logprobs", "advantages"), {BETA: None}),
}
INPUT_NAMES = ("target_tokens", "weights", "logprobs", "advantages")


def resolve_config(loss_fn: str, given: Mapping[str, float]) -> dict[str, float]:
    """The loss's full config: defaults filled in; OpError naming a bad key or value."""
    spec = LOSSES[loss_fn]
    for key, value in given.items():
        if key not in spec.config:
            allowed = ", ".join(spec.config) or "none"
            raise invalid(
                f"loss_fn_config.{key}", f"unknown key for {loss_fn} (accepted: {allowed})"
            )
        if not math.isfinite(value):
            raise invalid(f"loss_fn_config.{key}", f"must be finite, got {value}")
    resolved: dict[str, float] = {}
    for key, default in spec.config.items():
        if key in given:
            resolved[key] = float(given[key])
        elif default is None:
            raise invalid(f"loss_fn_config.{key}", f"is required by {loss_fn}")
        else:
            resolved[key] = default
    if CLIP_LOW in resolved and resolved[CLIP_LOW] > resolved[CLIP_HIGH]:
        raise invalid(
            f"loss_fn_config.{CLIP_LOW}",
            f"{resolved[CLIP_LOW]} is above {CLIP_HIGH} {resolved[CLIP_HIGH]}",
        )
    if BETA in resolved and resolved[BETA] < 0:
        raise invalid(f"loss_fn_config.{BETA}", f"must be >= 0, got {resolved[BETA]}")
    return resolved


def loss_metrics(loss_fn: str, losses: TokenLosses, x: LossInputs) -> dict[str, float]:
    """`loss:sum`, plus `ratio:mean` and `clip_fraction:mean` for the ratio losses."""
    metrics = {"loss:sum": float(losses.loss_NT.detach().double().sum())}
    if LOSSES[loss_fn].ratio_metrics and losses.ratio_NT is not None:
        assert losses.clipped_NT is not None
        tokens = (x.mask_NT > 0) & (x.advantages_NT != 0)
        if not bool(tokens.any()):
            tokens = x.mask_NT > 0
        count = max(int(tokens.sum()), 1)
        metrics["ratio:mean"] = float(losses.ratio_NT[tokens].double().sum()) / count
        metrics["clip_fraction:mean"] = float(losses.clipped_NT[tokens].sum()) / count
    return metrics
