"""Tinker's loss family as data: each loss's name, the inputs it needs, its config keys.

This table is the one definition of the losses. The SDK checks a request against it before
sending, the scheduler at its door and the trainer before running (all three through
`resolve_config`; the SDK and the trainer also check each datum with `check_input` and
`check_thresholds`), the trainer's functions are keyed by these names
(treadle_trainer/losses.py), and capabilities list the names a trainer runs.

With lp the learner logprob of each target token, q the sampler logprob (`logprobs` input),
A the advantage, r = exp(lp - q) and sg a stop-gradient, each loss is, per token t:

    cross_entropy        -w·lp                                   (w = `weights`, default 1)
    importance_sampling  -r·A
    ppo                  -min(r·A, clip(r, lo, hi)·A)            lo 0.8, hi 1.2 by default
    cispo                -sg(clip(r, lo, hi))·lp·A               lo 0.0, hi 4.0 by default
    dro                  -(lp·A - ½·β·(lp - q)²)                 β required
    gspo                 -min(s_t·A, clip(s_t, lo, hi)·A)        lo 0.9997, hi 1.0004 by default
    stable_reinforce     -sg(r·[lo ≤ r ≤ hi])·lp·A               lo 0.5, hi 2.0 by default

and an op's loss is the plain SUM over its tokens and datums (no normalisation).

gspo is Tinker's GSPO-token (https://tinker-docs.thinkingmachines.ai/tinker/losses/gspo/): over
the tokens M of a datum that its `sequence_ratio_mask` marks (mask != 0), the sequence ratio is
s = exp(mean_{u∈M} (sg(lp_u) - q_u)), and each token's ratio s_t = s·exp(lp_t - sg(lp_t)) has
s's value and the gradient of its own logprob. A datum without `sequence_ratio_mask` takes M =
its tokens with A != 0 (its sampled tokens: RL data gives prompt tokens A = 0 and q = 0); an
empty M gives s = 1. The defaults are the GSPO paper's clipping ranges, 1 - 3e-4 and 1 + 4e-4
(Zheng et al. 2025, arXiv:2507.18071 §5.1); Tinker's own defaults were not found, so they may
differ from these.

stable_reinforce is NOT Tinker's objective. Tinker documents `stable_reinforce` (alpha) as a
REINFORCE variant that stays stable off-policy using information its sampler records
(`record_stability_info=True`, datums annotated with the sampled `sequence_id`s), but the
objective itself could not be found in its documentation (only those sampling requirements),
and Treadle's sampler records nothing beyond the logprobs. Treadle runs a masked
importance-weighted REINFORCE on the datum's own q instead: each token's gradient is weighted
by its ratio r when r lies in the trust interval [lo, hi] and dropped (weight 0) outside it,
IcePop's mask M(r) = r·[lo ≤ r ≤ hi] (Ring-1T, arXiv:2510.18855). The weight is
bounded by hi, and tokens on which learner and sampler disagree grossly (stale or mismatched
numerics) carry no gradient; inside the interval the gradient is importance_sampling's. The
defaults, lo 0.5 and hi 2.0, are Treadle's choice: a token whose ratio is off by more than a
factor of two either way is taken as one the two policies disagree on.

Per-token thresholds: a datum may carry `clip_low_threshold` / `clip_high_threshold` as
per-token float32 inputs (as Tinker's Datum may); for the losses with those config keys (ppo,
cispo, gspo, stable_reinforce) a datum that carries them uses them for its tokens instead of
the config's scalar; every token's pair must be in order (lo <= hi), as the config's must. The
other losses accept and ignore them, as they ignore inputs they do not use.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from treadle.errors import bad_field

CROSS_ENTROPY = "cross_entropy"
IMPORTANCE_SAMPLING = "importance_sampling"
PPO = "ppo"
CISPO = "cispo"
DRO = "dro"
GSPO = "gspo"
STABLE_REINFORCE = "stable_reinforce"
# the same names for type checkers (Tinker's LossFnType); a test keeps it equal to LOSSES
LossName = Literal[
    "cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce"
]

CLIP_LOW = "clip_low_threshold"
CLIP_HIGH = "clip_high_threshold"
BETA = "beta"

TARGET_TOKENS = "target_tokens"
WEIGHTS = "weights"
LOGPROBS = "logprobs"
ADVANTAGES = "advantages"
SEQUENCE_RATIO_MASK = "sequence_ratio_mask"
# every loss_fn_input a datum may carry, with the dtype it must travel as (Tinker's Datum keys);
# CLIP_LOW and CLIP_HIGH are also per-token inputs: thresholds that override the config's
INPUT_DTYPES: Mapping[str, str] = {
    TARGET_TOKENS: "int64",
    WEIGHTS: "float32",
    LOGPROBS: "float32",
    ADVANTAGES: "float32",
    CLIP_LOW: "float32",
    CLIP_HIGH: "float32",
    SEQUENCE_RATIO_MASK: "float32",
}
RL_INPUTS = (TARGET_TOKENS, LOGPROBS, ADVANTAGES)


@dataclass(frozen=True)
class Loss:
    """One loss: the loss_fn_inputs it requires and its config keys with their defaults."""

    name: str
    inputs: tuple[str, ...]
    config: Mapping[str, float | None]  # accepted keys; a None default means required
    ratio_metrics: bool = False  # also reports `ratio:mean` and `clip_fraction:mean`


LOSSES: Mapping[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss(CROSS_ENTROPY, (TARGET_TOKENS,), {}),
        Loss(IMPORTANCE_SAMPLING, RL_INPUTS, {}, ratio_metrics=True),
        Loss(PPO, RL_INPUTS, {CLIP_LOW: 0.8, CLIP_HIGH: 1.2}, ratio_metrics=True),
        Loss(CISPO, RL_INPUTS, {CLIP_LOW: 0.0, CLIP_HIGH: 4.0}, ratio_metrics=True),
        Loss(DRO, RL_INPUTS, {BETA: None}),
        Loss(GSPO, RL_INPUTS, {CLIP_LOW: 1 - 3e-4, CLIP_HIGH: 1 + 4e-4}, ratio_metrics=True),
        Loss(STABLE_REINFORCE, RL_INPUTS, {CLIP_LOW: 0.5, CLIP_HIGH: 2.0}, ratio_metrics=True),
    )
}
CONFIG_KEYS = tuple(dict.fromkeys(key for loss in LOSSES.values() for key in loss.config))


def loss_for(loss_fn: str, forward_only: bool = False, runs: tuple[str, ...] = ()) -> Loss:
    """The Loss named `loss_fn` (a forward may leave it empty: cross_entropy); `runs`, when
    given, are the losses the trainer in question runs. ValidationError naming `loss_fn`."""
    name = loss_fn or (CROSS_ENTROPY if forward_only else "")
    accepted = runs or tuple(LOSSES)
    if name not in LOSSES or name not in accepted:
        raise bad_field("loss_fn", f"unknown loss {loss_fn!r} (accepted: {', '.join(accepted)})")
    return LOSSES[name]


def resolve_config(loss: Loss, given: Mapping[str, float] | None) -> dict[str, float]:
    """`loss`'s whole config: the given keys checked, defaults filled in; ValidationError
    naming the first bad key."""
    given = dict(given or {})
    for key in sorted(given):  # a map's order is the sender's: name the same key everywhere
        value, field = given[key], f"loss_fn_config.{key}"
        if key not in loss.config:
            accepted = ", ".join(loss.config) or "none"
            raise bad_field(field, f"unknown key for {loss.name} (accepted: {accepted})")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad_field(field, f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise bad_field(field, f"must be finite, got {number}")
    resolved: dict[str, float] = {}
    for key, default in loss.config.items():
        if key in given:
            resolved[key] = float(given[key])
        elif default is None:
            raise bad_field(f"loss_fn_config.{key}", f"is required by {loss.name}")
        else:
            resolved[key] = default
    if CLIP_LOW in resolved and resolved[CLIP_LOW] > resolved[CLIP_HIGH]:
        raise bad_field(
            f"loss_fn_config.{CLIP_LOW}",
            f"{resolved[CLIP_LOW]} is above {CLIP_HIGH} {resolved[CLIP_HIGH]}",
        )
    if BETA in resolved and resolved[BETA] < 0:
        raise bad_field(f"loss_fn_config.{BETA}", f"must be >= 0, got {resolved[BETA]}")
    return resolved


def check_input(path: str, name: str, array: np.ndarray, length: int) -> np.ndarray:
    """One datum's loss_fn_input `name` (at `path`), checked: a known input of the datum's
    length, int64 token ids or finite float32 values. ValidationError naming `path`."""
    dtype = INPUT_DTYPES.get(name)
    if dtype is None:
        raise bad_field(path, f"unknown input (accepted: {', '.join(INPUT_DTYPES)})")
    if array.shape != (length,):
        raise bad_field(
            path, f"shape {list(array.shape)} does not match model_input length {length}"
        )
    if array.dtype != np.dtype(dtype):
        raise bad_field(path, f"dtype must be {dtype}, got {array.dtype}")
    if dtype == "float32" and not np.isfinite(array).all():
        position = int(np.flatnonzero(~np.isfinite(array))[0])
        raise bad_field(path, f"non-finite value {array[position]} at position {position}")
    return array


def check_required_inputs(path: str, loss: Loss, names: Container[str]) -> None:
    """Every input `loss` requires is among `names` (the loss_fn_inputs of the datum at
    `path`)."""
    for name in loss.inputs:
        if name not in names:
            raise bad_field(f"{path}.loss_fn_inputs.{name}", f"is required by {loss.name}")


def check_thresholds(
    path: str, loss: Loss, config: Mapping[str, float], inputs: Mapping[str, np.ndarray]
) -> None:
    """The clip thresholds of each token of the datum at `path` are in order (lo <= hi): its
    per-token `clip_low_threshold` / `clip_high_threshold` inputs where it carries them, else
    `config`'s (the loss's defaults for keys it lacks). Only for the losses that clip; the
    inputs must have passed `check_input`. ValidationError naming the per-token input."""
    if CLIP_LOW not in loss.config or not (CLIP_LOW in inputs or CLIP_HIGH in inputs):
        return
    low = inputs.get(CLIP_LOW, config.get(CLIP_LOW, loss.config[CLIP_LOW]))
    high = inputs.get(CLIP_HIGH, config.get(CLIP_HIGH, loss.config[CLIP_HIGH]))
    low_T, high_T = np.broadcast_arrays(np.asarray(low), np.asarray(high))
    above = np.flatnonzero(low_T > high_T)
    if above.size:
        position = int(above[0])
        name = CLIP_LOW if CLIP_LOW in inputs else CLIP_HIGH
        raise bad_field(
            f"{path}.loss_fn_inputs.{name}",
            f"{CLIP_LOW} {low_T[position]} is above {CLIP_HIGH} {high_T[position]} "
            f"at position {position}",
        )
