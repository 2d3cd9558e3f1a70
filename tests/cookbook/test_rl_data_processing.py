"""The RL data path without a service: advantages, constant-reward groups, the KL penalty, and
trajectories to datums (the seed's numeric checks among them)."""

from __future__ import annotations

import numpy as np
import pytest

from treadle import types
from treadle_cookbook.completers import TokensWithLogprobs
from treadle_cookbook.rl import (
    TrajectoryGroup,
    assemble_training_data,
    centered_advantages,
    compute_advantages,
    compute_trajectory_metrics,
    kl_penalty_adjustments,
    remove_constant_reward_groups,
    trajectory_to_data,
)
from treadle_cookbook.rl.data_processing import full_sequence, without_mask
from treadle_cookbook.rl.types import Trajectory, Transition


def _trajectory(reward: float, prompt: list[int], action: list[int]) -> Trajectory:
    ac = TokensWithLogprobs(action, [-0.5] * len(action))
    ob = types.ModelInput.from_ints(prompt)
    return Trajectory([Transition(ob, ac, reward, True, {"correct": reward})], ob)


def _group(rewards: list[float]) -> TrajectoryGroup:
    trajectories = [_trajectory(r, [1, 2, 3], [10 + i, 20 + i]) for i, r in enumerate(rewards)]
    return TrajectoryGroup(trajectories, [0.0] * len(rewards), [{} for _ in rewards])


def test_mean_centring_is_shift_invariant_but_not_scale_invariant() -> None:
    assert np.allclose(centered_advantages([0, 0, 1, 1]), centered_advantages([5, 5, 6, 6]))
    assert np.allclose(centered_advantages([0, 0, 1, 1]), [-0.5, -0.5, 0.5, 0.5])
    assert not np.allclose(centered_advantages([0, 2]), centered_advantages([0, 4]))
    # no std division: twice the reward gap is twice the advantage
    assert np.allclose(centered_advantages([0, 4]), 2 * centered_advantages([0, 2]))


def test_constant_reward_group_has_zero_advantage_and_is_dropped() -> None:
    constant, mixed = _group([1.0, 1.0, 1.0]), _group([0.0, 1.0, 1.0])
    assert np.allclose(compute_advantages([constant])[0], 0.0)
    assert remove_constant_reward_groups([constant, mixed]) == [mixed]
    metrics = compute_trajectory_metrics([constant, mixed])
    assert metrics["frac_reward_zero_std"] == 0.5
    assert metrics["reward/mean"] == pytest.approx(5 / 6)
    # a group left with one episode (the others failed) teaches nothing either
    assert remove_constant_reward_groups([_group([1.0])]) == []


def test_kl_adjustment_sums_to_zero_and_hits_the_most_divergent_token() -> None:
    kl = np.array([0.001, 0.002, 0.050, 0.003])
    adjustments, mean_kl = kl_penalty_adjustments([kl], [np.ones(4)], coef=0.05)
    assert mean_kl == pytest.approx(kl.mean())
    assert abs(adjustments[0].sum()) < 1e-15
    assert adjustments[0].argmin() == 2
    assert np.allclose(adjustments[0], 0.05 * (kl.mean() - kl))


def test_kl_adjustment_leaves_prompt_tokens_alone_across_datums() -> None:
    kl = [np.array([9.0, 0.1, 0.3]), np.array([7.0, 0.2])]
    masks = [np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0])]
    adjustments, mean_kl = kl_penalty_adjustments(kl, masks, coef=1.0)
    assert mean_kl == pytest.approx(0.2)
    assert adjustments[0][0] == 0 and adjustments[1][0] == 0
    assert sum(a.sum() for a in adjustments) == pytest.approx(0.0, abs=1e-12)


def test_trajectory_to_datum_shifts_and_masks_the_action() -> None:
    (datum,) = trajectory_to_data(_trajectory(1.0, [1, 2, 3], [7, 8]), advantage=0.25)
    assert datum.model_input.to_ints() == [1, 2, 3, 7]
    inputs = {k: v.to_numpy().tolist() for k, v in datum.loss_fn_inputs.items()}
    assert inputs["target_tokens"] == [2, 3, 7, 8]
    assert inputs["mask"] == [0.0, 0.0, 1.0, 1.0]
    assert inputs["advantages"] == [0.0, 0.0, 0.25, 0.25]
    assert inputs["logprobs"] == [0.0, 0.0, -0.5, -0.5]
    assert full_sequence(datum).to_ints() == [1, 2, 3, 7, 8]
    assert "mask" not in without_mask(datum).loss_fn_inputs


def test_multi_turn_trajectory_merges_extending_observations() -> None:
    first = Transition(
        types.ModelInput.from_ints([1, 2]), TokensWithLogprobs([3], [-1.0]), 0.0, False
    )
    second = Transition(
        types.ModelInput.from_ints([1, 2, 3, 4]), TokensWithLogprobs([5], [-2.0]), 1.0, True
    )
    fresh = Transition(types.ModelInput.from_ints([9]), TokensWithLogprobs([8], [-3.0]), 0.0, True)
    merged = trajectory_to_data(Trajectory([first, second], types.ModelInput.empty()), 1.0)
    assert len(merged) == 1
    assert full_sequence(merged[0]).to_ints() == [1, 2, 3, 4, 5]
    assert merged[0].loss_fn_inputs["mask"].to_numpy().tolist() == [0, 1, 0, 1]
    split = trajectory_to_data(Trajectory([first, fresh], types.ModelInput.empty()), 1.0)
    assert [full_sequence(d).to_ints() for d in split] == [[1, 2, 3], [9, 8]]


def test_assembled_data_carries_each_trajectorys_advantage() -> None:
    group = _group([0.0, 1.0])
    data = assemble_training_data([group], compute_advantages([group]))
    assert [float(d.loss_fn_inputs["advantages"].to_numpy()[-1]) for d in data] == [-0.5, 0.5]
