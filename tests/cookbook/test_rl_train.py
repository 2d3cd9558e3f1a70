"""The RL loop against the real local mesh (tiny-llama): synchronous mode with a reward function
that raises, the KL penalty and the sampler-vs-trainer KL; stream-minibatch mode; async mode with
max_steps_off_policy = 1, where a slow rollout goes stale and is requeued."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import treadle
from treadle import types
from treadle_cookbook.completers import TreadleMessageCompleter, TreadleTokenCompleter
from treadle_cookbook.renderers import get_renderer
from treadle_cookbook.rl import (
    AsyncConfig,
    Config,
    Env,
    EnvGroupBuilder,
    RLDataset,
    StepResult,
    StreamMinibatchConfig,
    train,
)

from .conftest import TINY

PROMPT = (1, 400, 401, 402, 403)


class TokenIdsEnv(Env):
    """Reward: the answer's mean token id modulo 100, over 100 (two random answers almost never
    tie, so groups are informative). `broken` envs' reward raises."""

    def __init__(self, broken: bool) -> None:
        self.broken = broken

    async def initial_observation(self) -> tuple[types.ModelInput, list[int]]:
        return types.ModelInput.from_ints(list(PROMPT)), []

    async def step(self, action: list[int]) -> StepResult:
        if self.broken:
            raise RuntimeError("reward service unavailable")
        reward = sum(t % 100 for t in action) / len(action) / 100
        return StepResult(reward, True, types.ModelInput.empty(), [], {"score": reward})


@dataclass
class TokenIdsGroup(EnvGroupBuilder):
    """`size` envs; the first `broken` of them fail. The first attempt can wait until the run
    has logged `wait_for_steps` steps (a straggler)."""

    size: int
    broken: int = 0
    log: str = ""
    wait_for_steps: int = 0
    attempts: int = 0

    async def make_envs(self) -> Sequence[Env]:
        self.attempts += 1
        if self.attempts == 1 and self.wait_for_steps:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and _logged_steps(self.log) < self.wait_for_steps:
                await asyncio.sleep(0.1)
        return [TokenIdsEnv(i < self.broken) for i in range(self.size)]


class Batches(RLDataset):
    def __init__(self, batches: list[list[TokenIdsGroup]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        return self.batches[index]


def _logged_steps(log_dir: str) -> int:
    path = Path(log_dir) / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _metrics(log_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


def _client(service: treadle.ServiceClient) -> treadle.TrainingClient:
    return service.create_lora_training_client(base_model=TINY, rank=4, seed=0)


def test_sync_run_excludes_failing_rollouts_and_keeps_training(
    service: treadle.ServiceClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    training = _client(service)
    dataset = Batches([[TokenIdsGroup(3, broken=1) for _ in range(2)] for _ in range(2)])
    config = Config(log_dir=str(tmp_path), learning_rate=1e-3, max_tokens=4, kl_penalty_coef=0.05)
    result = asyncio.run(train(config, training, dataset))

    steps = _metrics(tmp_path)
    assert [s["step"] for s in steps] == [0, 1, 2]  # two steps and the final entry
    for step in steps[:2]:
        assert step["rollout/errors"] == 2  # one failed env in each of the two groups
        assert step["episodes"] == 4  # the other four were trained on
        assert step["trained"] == 1
        assert "kl_policy_reference" in step
    # before the first update, the sampler and the trainer score the same tokens alike
    assert abs(steps[0]["optim/kl_sample_train_v1"]) < 1e-3
    assert steps[1]["step:max"] == steps[0]["step:max"] + 1
    assert "reward service unavailable" in capsys.readouterr().out
    assert (tmp_path / "metrics.png").stat().st_size > 0
    assert result.state_path.endswith("/weights/final")
    assert result.sampler_path.endswith("/sampler_weights/final")
    # the last weights are saved once: the final evaluation sampled the named checkpoint
    assert result.sampling_client.model_path == result.sampler_path


def test_stream_minibatch_trains_each_minibatch_as_it_lands(
    service: treadle.ServiceClient, tmp_path: Path
) -> None:
    training = _client(service)
    dataset = Batches([[TokenIdsGroup(2) for _ in range(4)]])
    config = Config(
        log_dir=str(tmp_path),
        learning_rate=1e-3,
        max_tokens=4,
        loss_fn="cispo",
        stream_minibatch_config=StreamMinibatchConfig(groups_per_batch=4, num_minibatches=2),
    )
    asyncio.run(train(config, training, dataset))
    (step, _) = _metrics(tmp_path)
    informative = round(4 * (1 - step["frac_reward_zero_std"]))
    assert step["datums"] == 2 * informative
    assert 1 <= step["minibatches"] <= 2
    assert step["step:max"] == 1  # one optimizer step for the whole batch


def test_async_requeues_stale_groups_and_keeps_the_batch_size(
    service: treadle.ServiceClient, tmp_path: Path
) -> None:
    training = _client(service)
    log = str(tmp_path)
    straggler = TokenIdsGroup(2, log=log, wait_for_steps=2)
    builders = [straggler] + [TokenIdsGroup(2) for _ in range(7)]
    dataset = Batches([builders[i : i + 2] for i in range(0, 8, 2)])
    config = Config(
        log_dir=log,
        learning_rate=1e-3,
        max_tokens=4,
        loss_fn="ppo",
        async_config=AsyncConfig(max_steps_off_policy=1, groups_per_batch=2),
    )
    result = asyncio.run(train(config, training, dataset))
    assert result.sampling_client.model_path == result.sampler_path  # saved once, named

    steps = _metrics(tmp_path)[:-1]
    assert len(steps) == 4
    assert all(s["async/groups"] == 2 for s in steps)  # stale groups are replaced, not dropped
    assert all(s["async/staleness_max"] <= 1 for s in steps)
    assert sum(s["async/requeued_stale"] for s in steps) >= 1
    assert straggler.attempts == 2  # sampled again with newer weights after going stale


def test_config_refuses_unknown_loss_and_two_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loss_fn"):
        Config(log_dir=str(tmp_path), loss_fn="cross_entropy").validate()
    with pytest.raises(ValueError, match="choose one mode"):
        Config(
            log_dir=str(tmp_path),
            async_config=AsyncConfig(1, 2),
            stream_minibatch_config=StreamMinibatchConfig(2, 2),
        ).validate()


def test_completers_sample_tokens_and_messages(
    service: treadle.ServiceClient, smol_tokenizer: Any
) -> None:
    renderer = get_renderer("chatml", smol_tokenizer)
    sampler = service.create_sampling_client(base_model=TINY)
    prompt = renderer.build_generation_prompt([{"role": "user", "content": "Hi"}])
    tokens = TreadleTokenCompleter(sampler, max_tokens=5)
    group = asyncio.run(tokens.complete_group(prompt, renderer.get_stop_sequences(), 3))
    assert len(group) == 3
    for completion in group:
        assert 1 <= len(completion.tokens) <= 5
        assert len(completion.logprobs) == len(completion.tokens)
        assert completion.stop_reason in ("stop", "length")
    messages = TreadleMessageCompleter(sampler, renderer, max_tokens=5, temperature=0.0)
    reply = asyncio.run(messages([{"role": "user", "content": "Hi"}]))
    assert reply["role"] == "assistant" and isinstance(reply["content"], str)
