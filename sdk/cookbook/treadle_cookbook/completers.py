"""Policies as completers, the two interfaces a loop samples through (tinker-cookbook's names):

- `TokenCompleter`: tokens in, sampled tokens and their logprobs out; what RL needs, since the
  loss compares the learner's logprobs with the sampler's.
- `MessageCompleter`: a conversation in, the next assistant message out; what evaluations and
  tool loops need.

Key decision: both are thin async wrappers over one `SamplingClient`, which is bound to one
immutable weights version; a loop that trains makes new completers from the new sampling client
after every weight save, so it can never sample stale weights by accident.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from treadle import SamplingClient, types
from treadle_cookbook.renderers import Message, Renderer

StopCondition = list[str] | list[int]


@dataclass
class TokensWithLogprobs:
    """A sampled completion: its tokens, their sampler logprobs, and why it ended."""

    tokens: list[int]
    maybe_logprobs: list[float] | None
    stop_reason: str = "stop"

    @property
    def logprobs(self) -> list[float]:
        """The logprobs (an error if the sampler returned none)."""
        if self.maybe_logprobs is None:
            raise ValueError("logprobs: this completion was sampled without logprobs")
        return self.maybe_logprobs


class TokenCompleter:
    """A policy over tokens."""

    async def __call__(
        self, model_input: types.ModelInput, stop: StopCondition
    ) -> TokensWithLogprobs:
        raise NotImplementedError

    async def complete_group(
        self, model_input: types.ModelInput, stop: StopCondition, n: int
    ) -> list[TokensWithLogprobs]:
        """`n` independent completions of one prompt (a group's envs often share it)."""
        return list(await asyncio.gather(*(self(model_input, stop) for _ in range(n))))


class MessageCompleter:
    """A policy over chat messages."""

    async def __call__(self, messages: list[Message]) -> Message:
        raise NotImplementedError


@dataclass
class TreadleTokenCompleter(TokenCompleter):
    """Samples one completion per call from `sampling_client`."""

    sampling_client: SamplingClient
    max_tokens: int
    temperature: float = 1.0

    async def __call__(
        self, model_input: types.ModelInput, stop: StopCondition
    ) -> TokensWithLogprobs:
        params = types.SamplingParams(
            max_tokens=self.max_tokens, temperature=self.temperature, stop=stop
        )
        response = await self.sampling_client.sample(model_input, 1, params)
        sequence = response.sequences[0]
        return TokensWithLogprobs(sequence.tokens, sequence.logprobs, sequence.stop_reason)

    async def complete_group(
        self, model_input: types.ModelInput, stop: StopCondition, n: int
    ) -> list[TokensWithLogprobs]:
        """One request for all `n`: the prompt is prefilled once and its cache shared."""
        params = types.SamplingParams(
            max_tokens=self.max_tokens, temperature=self.temperature, stop=stop
        )
        response = await self.sampling_client.sample(model_input, n, params)
        return [TokensWithLogprobs(s.tokens, s.logprobs, s.stop_reason) for s in response.sequences]


@dataclass
class TreadleMessageCompleter(MessageCompleter):
    """Renders the conversation, samples the assistant's turn, parses it back to a message."""

    sampling_client: SamplingClient
    renderer: Renderer
    max_tokens: int
    temperature: float = 1.0

    async def __call__(self, messages: list[Message]) -> Message:
        prompt = self.renderer.build_generation_prompt(messages)
        params = types.SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stop=self.renderer.get_stop_sequences(),
        )
        response = await self.sampling_client.sample(prompt, 1, params)
        message, _ = self.renderer.parse_response(response.sequences[0].tokens)
        return message
