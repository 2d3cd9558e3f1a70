"""From trajectory groups to training datums: group advantages, dropping uninformative groups, and
one datum per growing token sequence.

    advantage_i = R_i − mean_j R_j        (within a group; no division by the std: Dr. GRPO)

Mean-centring is shift-invariant (adding b to every reward changes nothing) but not
scale-invariant (twice the reward gap is twice the advantage), so a group's difficulty still
shows in the update. A group whose rewards are all equal has zero advantage everywhere and no
gradient, so it is dropped before training.

A datum holds `target_tokens`, `logprobs` (the sampler's), `advantages` and a `mask` (1 on
action tokens). The mask is for metrics on this side only; `without_mask` strips it before a
request is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from treadle import types
from treadle_cookbook.rl.types import Trajectory, TrajectoryGroup


def centered_advantages(rewards_G: Sequence[float]) -> np.ndarray:
    """Rewards minus their group mean."""
    rewards = np.asarray(rewards_G, dtype=np.float64)
    return rewards - rewards.mean() if rewards.size else rewards


def compute_advantages(groups_P: Sequence[TrajectoryGroup]) -> list[np.ndarray]:
    """The mean-centred advantage of each trajectory, group by group."""
    return [centered_advantages(group.get_total_rewards()) for group in groups_P]


def is_constant_reward(group: TrajectoryGroup) -> bool:
    """Whether a group teaches nothing: fewer than two episodes or all returns equal."""
    rewards = group.get_total_rewards()
    return len(rewards) < 2 or max(rewards) - min(rewards) < 1e-12


def remove_constant_reward_groups(groups_P: Sequence[TrajectoryGroup]) -> list[TrajectoryGroup]:
    """The groups with some spread in their returns (possibly none)."""
    return [group for group in groups_P if not is_constant_reward(group)]


def trajectory_to_data(trajectory: Trajectory, advantage: float) -> list[types.Datum]:
    """Datums of one trajectory: transitions whose observation extends the sequence so far are
    merged into one datum; an observation that does not starts a new one."""
    data: list[types.Datum] = []
    tokens: list[int] = []
    logprobs: list[float] = []
    advantages: list[float] = []
    mask: list[float] = []
    for transition in trajectory.transitions:
        ob = transition.ob.to_ints()
        if tokens and ob[: len(tokens)] == tokens:
            new_ob = ob[len(tokens) :]
        else:
            if tokens:
                data.append(_datum(tokens, logprobs, advantages, mask))
            tokens, logprobs, advantages, mask = [], [], [], []
            new_ob = ob
        action = transition.ac
        tokens += new_ob + list(action.tokens)
        logprobs += [0.0] * len(new_ob) + list(action.logprobs)
        advantages += [0.0] * len(new_ob) + [advantage] * len(action.tokens)
        mask += [0.0] * len(new_ob) + [1.0] * len(action.tokens)
    if len(tokens) >= 2:
        data.append(_datum(tokens, logprobs, advantages, mask))
    return data


def _datum(
    tokens: list[int], logprobs: list[float], advantages: list[float], mask: list[float]
) -> types.Datum:
    """Shift by one: input tokens[:-1] predict tokens[1:]."""
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.asarray(tokens[1:], dtype=np.int64)),
            "logprobs": types.TensorData.from_numpy(np.asarray(logprobs[1:], dtype=np.float32)),
            "advantages": types.TensorData.from_numpy(np.asarray(advantages[1:], dtype=np.float32)),
            "mask": types.TensorData.from_numpy(np.asarray(mask[1:], dtype=np.float32)),
        },
    )


def assemble_training_data(
    groups_P: Sequence[TrajectoryGroup], advantages_P: Sequence[np.ndarray]
) -> list[types.Datum]:
    """Every trajectory's datums, with its advantage on its action tokens."""
    data: list[types.Datum] = []
    for group, advantages_G in zip(groups_P, advantages_P, strict=True):
        for trajectory, advantage in zip(group.trajectories_G, advantages_G, strict=True):
            data.extend(trajectory_to_data(trajectory, float(advantage)))
    return data


def without_mask(datum: types.Datum) -> types.Datum:
    """The datum as the service takes it (the client-side `mask` removed)."""
    inputs = {k: v for k, v in datum.loss_fn_inputs.items() if k != "mask"}
    return types.Datum(datum.model_input, inputs)


def full_sequence(datum: types.Datum) -> types.ModelInput:
    """The unshifted token sequence of a datum: its input plus the last target token."""
    last = int(datum.loss_fn_inputs["target_tokens"].to_numpy()[-1])
    return datum.model_input.append_int(last)
