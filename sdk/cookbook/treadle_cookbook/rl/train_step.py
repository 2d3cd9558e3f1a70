"""One RL update from a batch of trajectory groups, shared by every training mode.

groups → drop constant-reward groups → mean-centred advantages → datums → (KL penalty against
the reference) → forward_backward + optim_step per substep, all submitted before any is awaited
(one step per clock cycle) → sampler-vs-trainer KL from the returned logprobs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from treadle import SamplingClient, TrainingClient, types
from treadle.contract.losses import CISPO, IMPORTANCE_SAMPLING, PPO
from treadle_cookbook.rl.data_processing import (
    assemble_training_data,
    compute_advantages,
    remove_constant_reward_groups,
    without_mask,
)
from treadle_cookbook.rl.metrics import compute_kl_sample_train, incorporate_kl_penalty
from treadle_cookbook.rl.types import TrajectoryGroup

RL_LOSSES = (IMPORTANCE_SAMPLING, PPO, CISPO)


def split_list(items: Sequence[types.Datum], parts: int) -> list[list[types.Datum]]:
    """`items` in `parts` contiguous chunks of near-equal size (none empty)."""
    parts = max(1, min(parts, len(items)))
    bounds = np.linspace(0, len(items), parts + 1).astype(int)
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds)]


async def train_step(
    data_D: Sequence[types.Datum],
    training_client: TrainingClient,
    adam: types.AdamParams,
    num_substeps: int,
    loss_fn: str,
    loss_fn_config: dict[str, float] | None = None,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """Train on `data_D` in `num_substeps` optimizer steps; every request is submitted up front.

    Returns the trainer's logprobs of each datum's targets and the summed loss and last
    optimizer metrics."""
    futures = []
    for batch in split_list(data_D, num_substeps):
        fb = training_client.forward_backward(
            [without_mask(d) for d in batch], loss_fn, loss_fn_config
        )
        futures.append((fb, training_client.optim_step(adam)))
    logprobs_D: list[np.ndarray] = []
    metrics: dict[str, float] = {"loss:sum": 0.0}
    for fb, optim in futures:
        output = await fb
        logprobs_D += [out["logprobs"].to_numpy() for out in output.loss_fn_outputs]
        metrics["loss:sum"] += output.metrics.get("loss:sum", 0.0)
        for key in ("clip_fraction:mean", "ratio:mean"):
            if key in output.metrics:
                metrics[key] = output.metrics[key]
        metrics.update((await optim).metrics)
    return logprobs_D, metrics


def informative_data(groups_P: Sequence[TrajectoryGroup]) -> list[types.Datum]:
    """The datums of the groups worth training on (constant-reward groups dropped)."""
    kept = remove_constant_reward_groups(groups_P)
    return assemble_training_data(kept, compute_advantages(kept))


async def penalize_and_forward_backward(
    data_D: list[types.Datum],
    training_client: TrainingClient,
    loss_fn: str,
    loss_fn_config: dict[str, float] | None,
    reference: SamplingClient | None,
    kl_penalty_coef: float,
) -> tuple[types.ForwardBackwardOutput, dict[str, float]]:
    """One forward_backward (no optimizer step) on `data_D`, after the KL penalty if any."""
    metrics = await _kl_penalty(data_D, reference, kl_penalty_coef)
    output = await training_client.forward_backward(
        [without_mask(d) for d in data_D], loss_fn, loss_fn_config
    )
    return output, metrics


async def _kl_penalty(
    data_D: list[types.Datum], reference: SamplingClient | None, coef: float
) -> dict[str, float]:
    if reference is None or coef == 0 or not data_D:
        return {}
    return await incorporate_kl_penalty(data_D, reference, coef)


async def train_on_groups(
    groups_P: Sequence[TrajectoryGroup],
    training_client: TrainingClient,
    adam: types.AdamParams,
    num_substeps: int,
    loss_fn: str,
    loss_fn_config: dict[str, float] | None = None,
    reference: SamplingClient | None = None,
    kl_penalty_coef: float = 0.0,
) -> dict[str, float]:
    """One full update from trajectory groups; `trained` is 0 when every group was constant."""
    data_D = informative_data(groups_P)
    if not data_D:
        return {"trained": 0.0, "datums": 0.0}
    metrics = await _kl_penalty(data_D, reference, kl_penalty_coef)
    logprobs_D, optim_metrics = await train_step(
        data_D, training_client, adam, num_substeps, loss_fn, loss_fn_config
    )
    metrics.update(optim_metrics)
    metrics.update(compute_kl_sample_train(data_D, logprobs_D))
    metrics.update({"trained": 1.0, "datums": float(len(data_D))})
    return metrics
