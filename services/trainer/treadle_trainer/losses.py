"""Tinker's loss family, per token, on [N, T] tensors of one op's datums.

The losses' names, inputs and config keys are the contract's table (treadle.contract.losses,
whose docstring has the formulas); this module holds their torch functions, keyed by those
names. `RUNS` is what this trainer runs, and what its capability reports.

An op's loss is the plain SUM over its tokens and datums (no normalisation), so the
gradient of a sum of ops' losses gives each adapter exactly its own gradient. Tokens with A = 0
(prompt tokens in RL data, which carry q = 0) get r = 1 in the loss so that exp never sees a
huge log-ratio there; `ratio:mean` and `clip_fraction:mean` are taken over the tokens with
A != 0 (all tokens if there are none).

Every loss but gspo is a function of each token's own lp. gspo's token value also depends on its
datum's sequence ratio, a mean of detached lp over the datum's tokens; a caller that evaluates
the loss on a slice of a datum's tokens (the engine's chunked head) computes that mean first,
from the whole datums' logprobs (`with_sequence_log_ratio`), and the function reads it from its
inputs (SEQUENCE_LOSSES are the losses that need it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
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
    ratio_mask_NT: torch.Tensor  # sequence_ratio_mask; NaN: gspo's default M (A != 0)
    sequence_NT: torch.Tensor  # int64: the datum (0, 1, ...) each token belongs to
    # gspo's per-datum mean over M of (sg(lp) - q), on each token; None: computed from the lp
    # the loss is given, which must then hold whole datums
    sequence_log_ratio_NT: torch.Tensor | None = None

    def narrow(self, offset: int, n: int) -> LossInputs:
        """The inputs of tokens [offset, offset + n) of every row."""
        parts: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            parts[f.name] = None if value is None else value.narrow(1, offset, n)
        return LossInputs(**parts)


@dataclass(frozen=True)
class TokenLosses:
    """Per-token loss (0 on padding) and, for ratio losses, the ratio and clip indicator."""

    loss_NT: torch.Tensor
    ratio_NT: torch.Tensor | None = None  # detached exp(lp - q) (gspo: its datum's s)
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


def in_sequence_ratio(x: LossInputs) -> torch.Tensor:
    """gspo's M, bool [N, T]: the tokens `sequence_ratio_mask` marks (!= 0), or, in a datum that
    carries none, its tokens with A != 0."""
    given = x.ratio_mask_NT.isnan().logical_not()
    marked = torch.where(given, x.ratio_mask_NT != 0, x.advantages_NT != 0)
    return marked & (x.mask_NT > 0)


def sequence_log_ratio(lp_NT: torch.Tensor, x: LossInputs) -> torch.Tensor:
    """mean_{u∈M} (sg(lp_u) - q_u) of each token's datum, on each token; 0 for an empty M.

    `lp_NT` must hold every token of the datums it covers (means are per datum, by sequence_NT).
    """
    in_ratio = in_sequence_ratio(x)
    log_ratio = torch.where(in_ratio, lp_NT.detach() - x.sampler_logprobs_NT, 0.0)
    ids = x.sequence_NT.reshape(-1)
    count = int(ids.max()) + 1 if ids.numel() else 0
    sums = lp_NT.new_zeros(count, dtype=torch.float64).index_add_(
        0, ids, log_ratio.reshape(-1).double()
    )
    sizes = lp_NT.new_zeros(count, dtype=torch.float64).index_add_(
        0, ids, in_ratio.reshape(-1).double()
    )
    means = sums / sizes.clamp(min=1.0)
    return means[ids].view_as(lp_NT).to(lp_NT.dtype)


def with_sequence_log_ratio(x: LossInputs, lp_NT: torch.Tensor) -> LossInputs:
    """`x` with gspo's per-datum log-ratio computed from `lp_NT`, the logprobs of all its tokens,
    so that the loss can then be evaluated on any slice of them (LossInputs.narrow)."""
    return replace(x, sequence_log_ratio_NT=sequence_log_ratio(lp_NT, x))


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


def gspo(lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]) -> TokenLosses:
    """-min(s_t·A, clip(s_t, lo, hi)·A), s_t = exp(mean_{u∈M} (sg(lp_u) - q_u) + lp_t - sg(lp_t))

    GSPO-token (Tinker's gspo): every token carries its datum's sequence ratio s as its value
    and the gradient of its own logprob, s·∇lp_t, unless clipped. M is `sequence_ratio_mask`
    != 0, or the tokens with A != 0 in a datum without one. lo, hi per token where the datum
    carries them. The clip indicator marks tokens whose term is clipped (zero gradient).
    """
    log_ratio = x.sequence_log_ratio_NT
    if log_ratio is None:
        log_ratio = sequence_log_ratio(lp_NT, x)
    ratio = torch.exp(log_ratio + lp_NT - lp_NT.detach())
    low, high = _thresholds(x, config)
    unclipped = ratio * x.advantages_NT
    clipped = torch.clamp(ratio, low, high) * x.advantages_NT
    loss = -torch.minimum(unclipped, clipped)
    return TokenLosses(loss * x.mask_NT, ratio.detach(), (clipped < unclipped).detach())


def stable_reinforce(
    lp_NT: torch.Tensor, x: LossInputs, config: Mapping[str, float]
) -> TokenLosses:
    """-sg(r·[lo ≤ r ≤ hi])·lp·A

    A masked importance-weighted REINFORCE (Treadle's stand-in for Tinker's alpha loss, whose
    objective Treadle could not obtain): a token keeps the gradient -r·A·∇lp while its ratio
    lies in the trust interval [lo, hi] and has none outside it. lo, hi per token where the
    datum carries them. The clip indicator marks the masked tokens.
    """
    ratio = _ratio(lp_NT, x).detach()
    low, high = _thresholds(x, config)
    trusted = (ratio >= low) & (ratio <= high)
    loss = -(torch.where(trusted, ratio, 0.0) * lp_NT * x.advantages_NT)
    return TokenLosses(loss * x.mask_NT, _true_ratio(lp_NT, x), trusted.logical_not())


FUNCTIONS: Mapping[str, LossFn] = {
    contract.CROSS_ENTROPY: cross_entropy,
    contract.IMPORTANCE_SAMPLING: importance_sampling,
    contract.PPO: ppo,
    contract.CISPO: cispo,
    contract.DRO: dro,
    contract.GSPO: gspo,
    contract.STABLE_REINFORCE: stable_reinforce,
}
RUNS = tuple(name for name in contract.LOSSES if name in FUNCTIONS)
# losses whose token values depend on their datum's other tokens (with_sequence_log_ratio)
SEQUENCE_LOSSES = frozenset({contract.GSPO})


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
