"""Evaluate a policy on an RL test set: roll out every env of the dataset once and average the
env metrics (for ProblemEnv: `correct`, `format`) and the reward.

Key decision: evaluation samples greedily (temperature 0) by default, so a number before and
after training compares the policies' single best answers, not sampling luck; set a temperature
and `samples` to measure the sampled accuracy instead.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import numpy as np

from treadle import SamplingClient
from treadle_cookbook.completers import TreadleTokenCompleter
from treadle_cookbook.rl.rollouts import do_group_rollout
from treadle_cookbook.rl.types import RLDataset


class RLTestSetEvaluator:
    """Mean env metrics of a dataset under a sampling client, as `{name}/{metric}`."""

    def __init__(
        self,
        dataset: RLDataset,
        max_tokens: int,
        name: str = "test",
        temperature: float = 0.0,
        samples: int = 1,
    ) -> None:
        self.dataset = dataset
        self.max_tokens = max_tokens
        self.name = name
        self.temperature = temperature
        self.samples = samples

    async def evaluate(self, sampling_client: SamplingClient) -> dict[str, float]:
        """Roll out every env `samples` times and average."""
        policy = TreadleTokenCompleter(sampling_client, self.max_tokens, self.temperature)
        builders = [b for i in range(len(self.dataset)) for b in self.dataset.get_batch(i)]
        groups = await asyncio.gather(
            *(do_group_rollout(b, policy) for b in builders for _ in range(self.samples))
        )
        values: dict[str, list[float]] = defaultdict(list)
        for group in groups:
            for trajectory, reward in zip(
                group.trajectories_G, group.get_total_rewards(), strict=True
            ):
                values["reward"].append(reward)
                for transition in trajectory.transitions:
                    for key, value in transition.metrics.items():
                        values[key].append(float(value))
        metrics = {f"{self.name}/{k}": float(np.mean(v)) for k, v in values.items()}
        metrics[f"{self.name}/episodes"] = float(len(values["reward"]))
        metrics[f"{self.name}/errors"] = float(sum(len(g.errors) for g in groups))
        return metrics

    def __call__(self, sampling_client: SamplingClient) -> dict[str, float]:
        """The same, from synchronous code."""
        return asyncio.run(self.evaluate(sampling_client))
