"""Rollouts: run envs against a policy (a TokenCompleter over the SamplingClient).

Key decisions:
- A failing rollout never stops the run. If an env's step (its reward function) or its initial
  observation raises, that one episode is reported as a `RolloutError` on its group and left
  out; if the group's `make_envs` or `compute_group_rewards` raises, the whole group is. The
  training loop counts and prints the errors and trains on what is left.
- The envs of a group usually open with the same prompt (GRPO asks one question several times),
  so first actions are sampled per distinct prompt with `complete_group`: one request of n
  samples, whose prompt the sampler prefills once. Later turns are sampled env by env.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import cast

from treadle import types
from treadle_cookbook.completers import StopCondition, TokenCompleter, TokensWithLogprobs
from treadle_cookbook.rl.types import (
    Env,
    EnvGroupBuilder,
    RolloutError,
    Trajectory,
    TrajectoryGroup,
    Transition,
)

logger = logging.getLogger(__name__)


async def finish_rollout(
    policy: TokenCompleter,
    env: Env,
    ob: types.ModelInput,
    stop: StopCondition,
    action: TokensWithLogprobs,
) -> Trajectory:
    """An episode from its first observation and action on: step, act, until done."""
    transitions: list[Transition] = []
    while True:
        result = await env.step(action.tokens)
        transitions.append(
            Transition(ob, action, result.reward, result.episode_done, result.metrics)
        )
        ob, stop = result.next_observation, result.next_stop_condition
        if result.episode_done:
            return Trajectory(transitions, ob)
        action = await policy(ob, stop)


async def do_single_rollout(policy: TokenCompleter, env: Env) -> Trajectory:
    """One episode: observe, act, step, until the env says it is done."""
    ob, stop = await env.initial_observation()
    return await finish_rollout(policy, env, ob, stop, await policy(ob, stop))


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


async def _first_actions(
    policy: TokenCompleter, starts: Sequence[tuple[types.ModelInput, StopCondition]]
) -> list[TokensWithLogprobs]:
    """A first action per env, sampled together for envs that share a prompt."""
    shared: dict[tuple[tuple[int, ...], tuple[int | str, ...]], list[int]] = defaultdict(list)
    for i, (ob, stop) in enumerate(starts):
        shared[(tuple(ob.to_ints()), tuple(stop))].append(i)
    groups = list(shared.values())
    sampled = await asyncio.gather(
        *(policy.complete_group(*starts[idx[0]], len(idx)) for idx in groups)
    )
    actions: list[TokensWithLogprobs | None] = [None] * len(starts)
    for indices, group_actions in zip(groups, sampled, strict=True):
        for i, action in zip(indices, group_actions, strict=True):
            actions[i] = action
    return [a for a in actions if a is not None]


async def _rollout_all(policy: TokenCompleter, envs: Sequence[Env]) -> list[object]:
    """Each env's trajectory, or the exception its episode raised."""
    starts = await asyncio.gather(
        *(env.initial_observation() for env in envs), return_exceptions=True
    )
    outcomes: list[object] = list(starts)
    live = [i for i, start in enumerate(starts) if not isinstance(start, BaseException)]
    live_starts = [cast(tuple[types.ModelInput, StopCondition], starts[i]) for i in live]
    if not live:
        return outcomes
    try:
        actions = await _first_actions(policy, live_starts)
    except Exception as error:  # sampling failed: every live episode fails with it
        for i in live:
            outcomes[i] = error
        return outcomes
    finished = await asyncio.gather(
        *(
            finish_rollout(policy, envs[i], *start, action)
            for i, start, action in zip(live, live_starts, actions, strict=True)
        ),
        return_exceptions=True,
    )
    for i, outcome in zip(live, finished, strict=True):
        outcomes[i] = outcome
    return outcomes


async def do_group_rollout(builder: EnvGroupBuilder, policy: TokenCompleter) -> TrajectoryGroup:
    """Roll out every env of the group concurrently and compute the group rewards.

    Episodes that raise are excluded and listed in `errors`; the group keeps the rest."""
    name = type(builder).__name__
    try:
        envs = await builder.make_envs()
    except Exception as error:  # a user's builder may raise anything
        logger.warning("rollout excluded: %s.make_envs: %s", name, describe_error(error))
        return TrajectoryGroup(
            [], [], [], [RolloutError(f"{name}.make_envs", describe_error(error))]
        )
    trajectories: list[Trajectory] = []
    errors: list[RolloutError] = []
    for i, outcome in enumerate(await _rollout_all(policy, envs)):
        if isinstance(outcome, Exception):
            errors.append(RolloutError(f"{name} env {i}", describe_error(outcome)))
        elif isinstance(outcome, BaseException):
            raise outcome  # cancellation and interrupts are not rollout errors
        else:
            trajectories.append(cast(Trajectory, outcome))
    try:
        group_rewards = await builder.compute_group_rewards(trajectories) if trajectories else []
    except Exception as error:  # a user's reward function may raise anything
        errors.append(RolloutError(f"{name}.compute_group_rewards", describe_error(error)))
        trajectories, group_rewards = [], []
    for excluded in errors:
        logger.warning("rollout excluded: %s: %s", excluded.where, excluded.message)
    return TrajectoryGroup(
        trajectories_G=trajectories,
        final_rewards_G=[reward for reward, _ in group_rewards],
        metrics_G=[metrics for _, metrics in group_rewards],
        errors=errors,
    )
