"""RL metrics and the KL penalty.

KL penalty against a reference model (kl_t = lp_policy_t − lp_reference_t on action tokens):

    advantage_t += coef · (mean_kl − kl_t)

The adjustment sums to zero over the batch's action tokens (it only moves credit between
tokens) and is most negative on the token that diverges most from the reference.

Sampler-vs-trainer KL (`optim/kl_sample_train_v1` = mean(q − lp), `_v2` = ½·mean((q − lp)²),
q the sampler's logprobs, lp the trainer's for the same tokens): near zero means the sampler and
the learner agree; a large value at step 0 means a wrong renderer or stale weights.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from treadle import SamplingClient, types
from treadle_cookbook.rl.data_processing import full_sequence, is_constant_reward
from treadle_cookbook.rl.types import TrajectoryGroup


def kl_penalty_adjustments(
    kl_D: Sequence[np.ndarray], mask_D: Sequence[np.ndarray], coef: float
) -> tuple[list[np.ndarray], float]:
    """Per-token advantage adjustments coef·(mean_kl − kl_t) on masked tokens, and mean_kl."""
    masked = [
        np.asarray(kl, np.float64) * np.asarray(m, np.float64)
        for kl, m in zip(kl_D, mask_D, strict=True)
    ]
    total = float(sum(np.asarray(m, np.float64).sum() for m in mask_D))
    mean_kl = float(sum(k.sum() for k in masked)) / total if total else 0.0
    adjustments = [
        coef * np.asarray(m, np.float64) * (mean_kl - k)
        for k, m in zip(masked, mask_D, strict=True)
    ]
    return adjustments, mean_kl


async def incorporate_kl_penalty(
    data_D: list[types.Datum], reference: SamplingClient, coef: float
) -> dict[str, float]:
    """Score each datum's tokens under `reference` and add the KL penalty to its advantages
    (in place). Returns `kl_policy_reference`, the mean per-token lp_policy − lp_reference."""
    reference_logprobs = await asyncio.gather(
        *(reference.compute_logprobs(full_sequence(d)) for d in data_D)
    )
    kl_D, mask_D = [], []
    for datum, ref in zip(data_D, reference_logprobs, strict=True):
        sampled = datum.loss_fn_inputs["logprobs"].to_numpy()
        ref_T = np.asarray([0.0 if lp is None else lp for lp in ref[1:]], np.float64)
        kl_D.append(sampled - ref_T)
        mask_D.append(datum.loss_fn_inputs["mask"].to_numpy())
    adjustments, mean_kl = kl_penalty_adjustments(kl_D, mask_D, coef)
    for datum, adjustment in zip(data_D, adjustments, strict=True):
        advantages = datum.loss_fn_inputs["advantages"].to_numpy() + adjustment
        datum.loss_fn_inputs["advantages"] = types.TensorData.from_numpy(
            advantages.astype(np.float32)
        )
    return {"kl_policy_reference": mean_kl}


def compute_kl_sample_train(
    data_D: Sequence[types.Datum], training_logprobs_D: Sequence[np.ndarray]
) -> dict[str, float]:
    """KL between the sampler's and the trainer's logprobs of the sampled tokens."""
    diffs, sampled = [], []
    for datum, trained in zip(data_D, training_logprobs_D, strict=True):
        mask = datum.loss_fn_inputs["mask"].to_numpy() > 0
        q = datum.loss_fn_inputs["logprobs"].to_numpy()[mask]
        diffs.append(q - np.asarray(trained)[mask])
        sampled.append(q)
    flat = np.concatenate(diffs) if diffs else np.zeros(0)
    if flat.size == 0:
        return {}
    return {
        "optim/kl_sample_train_v1": float(flat.mean()),
        "optim/kl_sample_train_v2": float(0.5 * (flat**2).mean()),
        "optim/entropy": float(-np.concatenate(sampled).mean()),
    }


def compute_trajectory_metrics(groups_P: Sequence[TrajectoryGroup]) -> dict[str, float]:
    """Reward, episode and env metrics of a batch of groups, before any filtering."""
    rewards = [r for group in groups_P for r in group.get_total_rewards()]
    episodes = [t for group in groups_P for t in group.trajectories_G]
    env_metrics: dict[str, list[float]] = defaultdict(list)
    for trajectory in episodes:
        for transition in trajectory.transitions:
            for key, value in transition.metrics.items():
                env_metrics[key].append(float(value))
    for group in groups_P:
        for metrics in group.metrics_G:
            for key, value in metrics.items():
                env_metrics[key].append(float(value))
    metrics = {
        "reward/mean": float(np.mean(rewards)) if rewards else float("nan"),
        "frac_reward_zero_std": float(np.mean([is_constant_reward(g) for g in groups_P]))
        if groups_P
        else 0.0,
        "episodes": float(len(episodes)),
        "ac_tokens_per_episode": float(
            np.mean([sum(len(t.ac.tokens) for t in e.transitions) for e in episodes])
        )
        if episodes
        else 0.0,
        "rollout/errors": float(sum(len(group.errors) for group in groups_P)),
    }
    metrics.update({f"env/{key}": float(np.mean(values)) for key, values in env_metrics.items()})
    return metrics
