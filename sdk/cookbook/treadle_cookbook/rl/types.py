"""The RL interfaces (tinker-cookbook's `rl/types.py`): an `Env` is one single-use episode, an
`EnvGroupBuilder` makes the group of envs whose rewards are centred together, and an `RLDataset`
hands out batches of builders. Plain dataclasses carry what flows between them.

Key decision: builders are plain picklable objects (dataclasses of data, no clients, no open
files), so a loop can fan rollout work out to processes; everything that talks to the service
(the policy) is passed in at rollout time, never stored in a builder.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from treadle import types
from treadle_cookbook.completers import StopCondition, TokensWithLogprobs

Action: TypeAlias = list[int]
Observation: TypeAlias = types.ModelInput
Metrics: TypeAlias = dict[str, float]


@dataclass
class StepResult:
    """What an env returns for one action."""

    reward: float
    episode_done: bool
    next_observation: Observation
    next_stop_condition: StopCondition
    metrics: Metrics = field(default_factory=dict)


@dataclass
class Transition:
    """One observation, the action taken, and its reward."""

    ob: Observation
    ac: TokensWithLogprobs
    reward: float
    episode_done: bool
    metrics: Metrics = field(default_factory=dict)


class Env:
    """A stateful episode for one agent; discard it after one episode."""

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        raise NotImplementedError

    async def step(self, action: Action) -> StepResult:
        raise NotImplementedError


@dataclass(frozen=True)
class Trajectory:
    """The transitions of one episode and its final observation."""

    transitions: list[Transition]
    final_ob: Observation


class EnvGroupBuilder:
    """Makes a group of envs. RL centres rewards across the group, and `compute_group_rewards`
    sees the whole group's trajectories (pairwise preferences, self-play)."""

    async def make_envs(self) -> Sequence[Env]:
        raise NotImplementedError

    async def compute_group_rewards(
        self, trajectory_group: list[Trajectory]
    ) -> list[tuple[float, Metrics]]:
        """A final reward per trajectory, added to the per-step rewards (default 0)."""
        return [(0.0, {}) for _ in trajectory_group]

    def logging_tags(self) -> list[str]:
        """Tags the group's metrics are also reported under."""
        return []


@dataclass
class RolloutError:
    """A rollout that failed (an env or reward function raised); it is excluded from training."""

    where: str
    message: str


@dataclass
class TrajectoryGroup:
    """The trajectories of one env group, their group rewards and metrics, and the rollouts of
    the group that failed (reported, not trained on)."""

    trajectories_G: list[Trajectory]
    final_rewards_G: list[float]
    metrics_G: list[Metrics]
    errors: list[RolloutError] = field(default_factory=list)

    def get_total_rewards(self) -> list[float]:
        """Each episode's return: its per-step rewards plus its group reward."""
        return [
            sum(t.reward for t in trajectory.transitions) + final
            for trajectory, final in zip(self.trajectories_G, self.final_rewards_G, strict=True)
        ]


class RLDataset:
    """Batches of env group builders."""

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class SampledRLDataset(RLDataset):
    """`n_batches` batches of `batch_size` items drawn with replacement from `items`, one group
    builder each (`builder`, defined by the subclass); batch i is the same for a given seed,
    whatever else ran before it."""

    def __init__(
        self, items: Sequence[Any], batch_size: int, group_size: int, n_batches: int, seed: int
    ) -> None:
        if batch_size < 1 or group_size < 1 or n_batches < 1:
            raise ValueError("batch_size, group_size, n_batches: must be >= 1")
        self.items = list(items)
        self.batch_size = batch_size
        self.group_size = group_size
        self.n_batches = n_batches
        self.seed = seed

    def builder(self, item: Any) -> EnvGroupBuilder:
        """The group builder of one drawn item (each dataset says how: arithmetic problems,
        prompts); abstract like RLDataset's own methods."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.n_batches

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        if not 0 <= index < self.n_batches:
            raise IndexError(f"batch {index} of {self.n_batches}")
        rng = random.Random(self.seed * 1_000_003 + index)
        return [self.builder(rng.choice(self.items)) for _ in range(self.batch_size)]


class RLDatasetBuilder:
    """Makes the training dataset and an optional test dataset."""

    def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        raise NotImplementedError
