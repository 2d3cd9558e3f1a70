"""ProblemEnv's reward on the real SmolLM2 tokenizer and ChatML renderer, and the arithmetic task's
datasets: splits that never overlap, and builders that survive pickling."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from treadle_cookbook.renderers import get_renderer
from treadle_cookbook.rl.arithmetic_env import (
    ArithmeticDataset,
    ArithmeticEnv,
    Problem,
    arithmetic_problems,
    held_out_dataset,
)


@pytest.fixture(scope="module")
def renderer(smol_tokenizer: Any) -> Any:
    return get_renderer("chatml", smol_tokenizer)


def _reward(renderer: Any, text: str, stop: bool) -> tuple[float, dict[str, float]]:
    env = ArithmeticEnv(renderer, Problem(7, "+", 5), format_coef=0.1)
    tokens = renderer.tokenizer.encode(text, add_special_tokens=False)
    if stop:
        tokens += renderer.get_stop_sequences()
    result = asyncio.run(env.step(tokens))
    assert result.episode_done
    return result.reward, result.metrics


@pytest.mark.parametrize(
    ("text", "stop", "reward"),
    [
        ("12", True, 1.0),  # correct, ended cleanly
        ("7 + 5 = 12", True, 1.0),  # the last number is the answer
        ("12", False, 0.9),  # correct but cut off: no format reward
        ("13", True, 0.0),  # well formed, wrong
        ("13", False, -0.1),  # wrong and cut off
        ("twelve", True, -0.1),  # clean stop but no number: format fails
    ],
)
def test_reward_is_format_coef_times_format_minus_one_plus_correct(
    renderer: Any, text: str, stop: bool, reward: float
) -> None:
    got, metrics = _reward(renderer, text, stop)
    assert got == pytest.approx(reward)
    assert metrics["correct"] == (1.0 if reward > 0.5 else 0.0)


def test_initial_observation_is_the_chat_prompt_and_stops_at_end_of_turn(renderer: Any) -> None:
    env = ArithmeticEnv(renderer, Problem(3, "+", 4))
    prompt, stop = asyncio.run(env.initial_observation())
    text = renderer.tokenizer.decode(prompt.to_ints())
    assert text.endswith(
        "What is 3 + 4? Answer with just the number.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert stop == renderer.get_stop_sequences()


def test_held_out_problems_never_appear_in_training_batches(renderer: Any) -> None:
    test = set(arithmetic_problems("test", 0, 19))
    train = set(arithmetic_problems("train", 0, 19))
    assert test and train and not test & train
    assert len(test) + len(train) == 400
    dataset = ArithmeticDataset(renderer, batch_size=8, group_size=2, n_batches=20, max_operand=19)
    seen = {b.env_thunk().problem for i in range(len(dataset)) for b in dataset.get_batch(i)}
    assert seen <= train
    held_out = held_out_dataset(renderer, max_operand=19).get_batch(0)
    assert {b.env_thunk().problem for b in held_out} == test


def test_batches_are_reproducible_and_builders_pickle(renderer: Any) -> None:
    dataset = ArithmeticDataset(renderer, batch_size=4, group_size=3, n_batches=5, seed=7)
    again = ArithmeticDataset(renderer, batch_size=4, group_size=3, n_batches=5, seed=7)
    batch = dataset.get_batch(3)
    assert [b.env_thunk().problem for b in batch] == [
        b.env_thunk().problem for b in again.get_batch(3)
    ]
    restored = pickle.loads(pickle.dumps(batch))
    envs = asyncio.run(restored[0].make_envs())
    assert len(envs) == 3
    assert envs[0].get_question() == batch[0].env_thunk().get_question()


def test_bad_problem_space_is_refused(renderer: Any) -> None:
    with pytest.raises(ValueError, match="ops"):
        arithmetic_problems("train", ops="/")
    with pytest.raises(ValueError, match="split"):
        arithmetic_problems("validation")
    with pytest.raises(ValueError, match="min_operand"):
        arithmetic_problems("train", min_operand=5, max_operand=1)
