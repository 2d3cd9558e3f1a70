"""Async off-policy RL: rollout workers sample continuously with the newest weights they have
while the trainer trains, so sampling and training overlap.

Key decisions:
- A group remembers the optimizer step of the weights that sampled it. When the trainer takes
  it at step s and it was sampled at step v with s − v > max_steps_off_policy, it is stale: its
  builder is requeued to be sampled again with newer weights, and the trainer takes another.
- Every step trains on exactly `groups_per_batch` fresh groups (stale ones are replaced, not
  just dropped), so the batch size and the learning rate's meaning stay constant. Constant-
  reward groups among them are then dropped exactly as in synchronous mode.
- Workers block when `groups_per_batch` finished groups are already waiting, which bounds how far
  sampling runs ahead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from treadle import SamplingClient, TrainingClient
from treadle_cookbook.rl.metrics import compute_trajectory_metrics
from treadle_cookbook.rl.rollouts import describe_error, do_group_rollout
from treadle_cookbook.rl.train import Config, Run, TrainResult
from treadle_cookbook.rl.types import EnvGroupBuilder, RLDataset, RolloutError, TrajectoryGroup


@dataclass
class SampledGroup:
    """A finished group, the step of the weights that sampled it, and its builder."""

    group: TrajectoryGroup
    sampling_step: int
    builder: EnvGroupBuilder


@dataclass
class PolicyVersion:
    """The newest weights: a sampling client and the optimizer step it reflects."""

    sampling_client: SamplingClient
    step: int


async def do_async_training(
    config: Config,
    training_client: TrainingClient,
    dataset: RLDataset,
    evaluators: Sequence[Any] = (),
) -> TrainResult:
    """Train with sampling running up to `max_steps_off_policy` steps ahead."""
    assert config.async_config is not None
    per_step = config.async_config.groups_per_batch
    max_off = config.async_config.max_steps_off_policy
    builders = [b for i in range(len(dataset)) for b in dataset.get_batch(i)]
    steps = min(len(builders) // per_step, config.max_steps or len(builders))
    if steps < 1:
        raise ValueError(
            f"async_config.groups_per_batch: {per_step} is more than the dataset's "
            f"{len(builders)} groups"
        )
    run = Run(config, training_client, evaluators, steps)
    work: asyncio.Queue[EnvGroupBuilder] = asyncio.Queue()
    for builder in builders:
        work.put_nowait(builder)
    finished: asyncio.Queue[SampledGroup] = asyncio.Queue(maxsize=per_step)
    current = PolicyVersion(await run.new_sampling_client(), 0)

    async def worker() -> None:
        while True:
            builder = await work.get()
            version = current  # the weights this group is sampled with
            try:
                group = await do_group_rollout(builder, run.policy(version.sampling_client))
            except Exception as error:  # a worker never dies: the trainer counts on its groups
                failure = RolloutError(type(builder).__name__, describe_error(error))
                group = TrajectoryGroup([], [], [], [failure])
            await finished.put(SampledGroup(group, version.step, builder))

    workers = [asyncio.ensure_future(worker()) for _ in range(per_step)]
    try:
        for step in range(steps):
            started = time.monotonic()
            metrics = await run.step_extras(step, current.sampling_client)
            batch, requeued = await _collect_fresh(step, per_step, max_off, finished, work)
            waited = time.monotonic()
            groups = [s.group for s in batch]
            train_metrics = await run.train(groups)
            run.report_errors(step, groups)
            if train_metrics.get("trained"):
                latest = await run.new_sampling_client(last=step + 1 == steps)
                current = PolicyVersion(latest, step + 1)
            staleness = [step - s.sampling_step for s in batch]
            metrics.update(compute_trajectory_metrics(groups))
            metrics.update(train_metrics)
            metrics.update(
                {
                    "async/groups": float(len(batch)),
                    "async/requeued_stale": float(requeued),
                    "async/staleness_max": float(max(staleness)),
                    "async/staleness_mean": sum(staleness) / len(staleness),
                    "time/wait_for_rollouts": waited - started,
                    "time/step": time.monotonic() - started,
                }
            )
            run.log.log(step, **metrics)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return await run.finish(current.sampling_client)


async def _collect_fresh(
    step: int,
    count: int,
    max_steps_off_policy: int,
    finished: asyncio.Queue[SampledGroup],
    work: asyncio.Queue[EnvGroupBuilder],
) -> tuple[list[SampledGroup], int]:
    """`count` groups sampled at most `max_steps_off_policy` steps ago; stale ones requeued."""
    batch: list[SampledGroup] = []
    requeued = 0
    while len(batch) < count:
        sampled = await finished.get()
        if step - sampled.sampling_step > max_steps_off_policy:
            work.put_nowait(sampled.builder)
            requeued += 1
        else:
            batch.append(sampled)
    return batch, requeued
