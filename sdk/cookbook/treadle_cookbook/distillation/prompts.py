"""Prompts as RL environments for distillation: an env that asks one conversation's next
assistant turn and rewards nothing, so that the teacher's signal is the only one, and the
datasets of such prompts.

Prompts come from conversation files (every conversation up to its last user turn) or from
lists of messages; builders hold only data (picklable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from treadle import types
from treadle_cookbook.completers import StopCondition
from treadle_cookbook.renderers import Message, Renderer
from treadle_cookbook.rl.types import (
    Action,
    Env,
    EnvGroupBuilder,
    Observation,
    SampledRLDataset,
    StepResult,
)
from treadle_cookbook.supervised.data import DatasetError, load_conversations


def load_prompts(path: str | Path) -> list[list[Message]]:
    """The prompt of every conversation in a JSONL conversation file: its messages up to and
    including the last user turn (a conversation without one is an error naming its line)."""
    prompts = []
    for conversation in load_conversations(path):
        users = [i for i, m in enumerate(conversation.messages) if m.get("role") == "user"]
        if not users:
            raise DatasetError(f"{conversation.source}: messages: no user turn to answer")
        prompts.append(list(conversation.messages[: users[-1] + 1]))
    return prompts


class PromptEnv(Env):
    """One assistant turn in answer to `messages`; reward 0."""

    def __init__(self, renderer: Renderer, messages: Sequence[Message]) -> None:
        self.renderer = renderer
        self.messages = list(messages)

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        prompt = self.renderer.build_generation_prompt(self.messages)
        return prompt, self.renderer.get_stop_sequences()

    async def step(self, action: Action) -> StepResult:
        _, clean = self.renderer.parse_response(action)
        return StepResult(
            reward=0.0,
            episode_done=True,
            next_observation=types.ModelInput.empty(),
            next_stop_condition=self.renderer.get_stop_sequences(),
            metrics={"clean_stop": float(clean)},
        )


@dataclass(frozen=True)
class PromptGroupBuilder(EnvGroupBuilder):
    """`group_size` answers to one prompt."""

    renderer: Renderer
    messages: tuple[Message, ...]
    group_size: int

    async def make_envs(self) -> Sequence[Env]:
        return [PromptEnv(self.renderer, self.messages) for _ in range(self.group_size)]


class PromptDataset(SampledRLDataset):
    """`n_batches` batches of `batch_size` prompts drawn (seeded) from `prompts`."""

    def __init__(
        self,
        prompts: Sequence[Sequence[Message]],
        renderer: Renderer,
        batch_size: int,
        group_size: int,
        n_batches: int,
        seed: int = 0,
    ) -> None:
        if not prompts:
            raise ValueError("prompts: no prompts")
        super().__init__([tuple(p) for p in prompts], batch_size, group_size, n_batches, seed)
        self.renderer = renderer

    @property
    def prompts(self) -> list[tuple[Message, ...]]:
        return self.items

    def builder(self, item: tuple[Message, ...]) -> PromptGroupBuilder:
        return PromptGroupBuilder(self.renderer, item, self.group_size)
