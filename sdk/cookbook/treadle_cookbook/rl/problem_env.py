"""Single-turn verifiable tasks: `ProblemEnv` asks one question and scores one answer.

    reward = format_coef · (format − 1) + correct

`format` is 1 only when the response ended cleanly with the renderer's stop sequence AND passes
`check_format`; a response cut off at max_tokens cannot collect it, however it reads. `correct`
is 1 when `check_answer` accepts the parsed response. So a well-formed wrong answer scores 0, a
truncated one −format_coef, a correct well-formed one 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from treadle import types
from treadle_cookbook.completers import StopCondition
from treadle_cookbook.renderers import Message, Renderer
from treadle_cookbook.rl.types import Action, Env, EnvGroupBuilder, Observation, StepResult


class ProblemEnv(Env):
    """One question, one answer. Subclasses say what the question is and how to grade."""

    def __init__(
        self,
        renderer: Renderer,
        convo_prefix: list[Message] | None = None,
        format_coef: float = 0.1,
    ) -> None:
        self.renderer = renderer
        self.convo_prefix = list(convo_prefix or [])
        self.format_coef = format_coef

    def get_question(self) -> str:
        """The user's question."""
        raise NotImplementedError

    def check_answer(self, response: str) -> bool:
        """Whether the response's answer is correct."""
        raise NotImplementedError

    def check_format(self, response: str) -> bool:
        """Whether the response has the expected form (checked only after a clean stop)."""
        raise NotImplementedError

    def get_reference_answer(self) -> str:
        """The correct answer, for logs."""
        raise NotImplementedError

    @property
    def stop_condition(self) -> StopCondition:
        """What ends the answer: the renderer's stop sequences."""
        return self.renderer.get_stop_sequences()

    def conversation(self) -> list[Message]:
        """The prompt conversation: the prefix and the question."""
        return [*self.convo_prefix, Message(role="user", content=self.get_question())]

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        return self.renderer.build_generation_prompt(self.conversation()), self.stop_condition

    async def step(self, action: Action) -> StepResult:
        message, clean_stop = self.renderer.parse_response(action)
        content = message["content"]
        well_formed = float(clean_stop and self.check_format(content))
        correct = float(self.check_answer(content))
        return StepResult(
            reward=self.format_coef * (well_formed - 1.0) + correct,
            episode_done=True,
            next_observation=types.ModelInput.empty(),
            next_stop_condition=self.stop_condition,
            metrics={"format": well_formed, "correct": correct},
        )


@dataclass(frozen=True)
class ProblemGroupBuilder(EnvGroupBuilder):
    """`num_envs` copies of one problem (`env_thunk` must be picklable: a class or a
    functools.partial, not a lambda)."""

    env_thunk: Callable[[], ProblemEnv]
    num_envs: int
    dataset_name: str = "problems"

    async def make_envs(self) -> Sequence[Env]:
        return [self.env_thunk() for _ in range(self.num_envs)]

    def logging_tags(self) -> list[str]:
        return [self.dataset_name]
