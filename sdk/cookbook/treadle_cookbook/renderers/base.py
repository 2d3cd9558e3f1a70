"""What every chat renderer shares: the message type, the Renderer interface, validation, and the
token-level assembly of a conversation with per-token loss weights.

Key decision: each message is tokenized as ONE string (as Hugging Face's apply_chat_template
tokenizes the whole rendering), and the boundaries between its untrained head (role marker),
trainable body (content and end-of-turn token) and untrained tail (separator) are found on the
tokens afterwards, by decoded length. So the tokens equal the model family's own template, and a
token that straddles a boundary goes to the body, so that every content character is trained.
Messages are joined at special tokens, where tokenizations never merge, so a generation prompt is
always a prefix of the training sequence of the same conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypedDict

import numpy as np

from treadle import types

ROLES = ("system", "user", "assistant")


class Message(TypedDict):
    """One chat turn: role is system, user or assistant."""

    role: str
    content: str


class TrainOnWhat(StrEnum):
    """Which assistant turns carry loss weight 1."""

    ALL_ASSISTANT_MESSAGES = "all_assistant_messages"
    LAST_ASSISTANT_MESSAGE = "last_assistant_message"


class RenderError(ValueError):
    """A conversation that cannot be rendered; the message names the offending field."""


class Renderer(Protocol):
    """Turns conversations into tokens and sampled tokens back into messages."""

    name: str
    tokenizer: Any

    def build_supervised_example(
        self,
        messages: list[Message],
        train_on_what: TrainOnWhat = TrainOnWhat.ALL_ASSISTANT_MESSAGES,
    ) -> tuple[list[int], list[float]]: ...

    def build_generation_prompt(
        self, messages: list[Message], role: str = "assistant"
    ) -> types.ModelInput: ...

    def get_stop_sequences(self) -> list[str] | list[int]: ...

    def parse_response(self, tokens: list[int]) -> tuple[Message, bool]: ...


@dataclass(frozen=True)
class MessageText:
    """A message's rendering: `head` and `tail` are never trained, `body` is when asked."""

    head: str
    body: str
    tail: str = ""


def validate_messages(messages: Any) -> list[Message]:
    """The messages, checked: a list of {role, content} with known roles and string content,
    and no empty assistant turn. Raises RenderError naming `messages[i].field`."""
    if not isinstance(messages, list):
        raise RenderError(f"messages: expected a list of messages, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RenderError(f"messages[{i}]: expected an object, got {type(message).__name__}")
        if "role" not in message:
            raise RenderError(f"messages[{i}].role: missing")
        role = message["role"]
        if role not in ROLES:
            raise RenderError(
                f"messages[{i}].role: unknown role {role!r} (expected one of {', '.join(ROLES)})"
            )
        content = message.get("content")
        if not isinstance(content, str):
            raise RenderError(
                f"messages[{i}].content: expected a string, got {type(content).__name__}"
            )
        if role == "assistant" and not content.strip():
            raise RenderError(f"messages[{i}].content: empty assistant turn")
    return messages


def trained_indices(messages: list[Message], train_on_what: TrainOnWhat) -> set[int]:
    """Indices of the assistant messages whose body carries weight."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant:
        raise RenderError("messages: no assistant turn to train on")
    if TrainOnWhat(train_on_what) == TrainOnWhat.LAST_ASSISTANT_MESSAGE:
        return {assistant[-1]}
    return set(assistant)


class BaseRenderer:
    """Assembles tokens and weights from the per-message text a format defines.

    A format overrides `prefix_text` (or `prefix_tokens`), `message_text`, `generation_text`,
    `get_stop_sequences` and `parse_response`."""

    name = "base"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ format hooks
    def prefix_text(self, messages: list[Message]) -> str:
        """Text before the first message (BOS, a default system prompt)."""
        return ""

    def prefix_tokens(self, messages: list[Message]) -> list[int]:
        """Tokens before the first message: `prefix_text`, encoded."""
        return self.encode(self.prefix_text(messages))

    def message_text(
        self, index: int, messages: list[Message], closing: bool = False
    ) -> MessageText:
        """The rendering of messages[index]; `closing` when it ends a training example."""
        raise NotImplementedError

    def generation_text(self, messages: list[Message], role: str) -> str:
        """The header that asks the model for the next turn of `role`."""
        raise NotImplementedError

    def get_stop_sequences(self) -> list[str] | list[int]:
        """What ends a sampled turn: token ids or strings."""
        raise NotImplementedError

    def parse_response(self, tokens: list[int]) -> tuple[Message, bool]:
        """The sampled turn as a message, and whether it ended with a stop sequence."""
        raise NotImplementedError

    # ------------------------------------------------------------------ assembly
    def build_supervised_example(
        self,
        messages: list[Message],
        train_on_what: TrainOnWhat = TrainOnWhat.ALL_ASSISTANT_MESSAGES,
    ) -> tuple[list[int], list[float]]:
        """Tokens of the whole conversation and a weight per token: 1.0 on the trained
        assistant turns' content and end-of-turn token, 0.0 elsewhere."""
        messages = validate_messages(messages)
        trained = trained_indices(messages, train_on_what)
        tokens = self.prefix_tokens(messages)
        weights = [0.0] * len(tokens)
        for i in range(len(messages)):
            text = self.message_text(i, messages, closing=i == len(messages) - 1)
            head, body, tail = self.encode_parts(text)
            weight = 1.0 if i in trained else 0.0
            tokens += head + body + tail
            weights += [0.0] * len(head) + [weight] * len(body) + [0.0] * len(tail)
        return tokens, weights

    def build_generation_prompt(
        self, messages: list[Message], role: str = "assistant"
    ) -> types.ModelInput:
        """The conversation so far followed by the header of `role`'s next turn."""
        messages = validate_messages(messages)
        if role not in ROLES:
            raise RenderError(f"role: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        tokens = self.prefix_tokens(messages)
        for i in range(len(messages)):
            head, body, tail = self.encode_parts(self.message_text(i, messages))
            tokens += head + body + tail
        tokens += self.encode(self.generation_text(messages, role))
        return types.ModelInput.from_ints(tokens)

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, special-token markers included, nothing added."""
        if not text:
            return []
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, tokens: list[int]) -> str:
        """Text of `tokens`, special tokens kept, spacing untouched."""
        return str(
            self.tokenizer.decode(
                tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        )

    def encode_parts(self, text: MessageText) -> tuple[list[int], list[int], list[int]]:
        """The message tokenized as one string, split into head, body and tail tokens."""
        tokens = self.encode(text.head + text.body + text.tail)
        start = self._last_within(tokens, len(text.head))
        end = self._first_reaching(tokens, len(text.head) + len(text.body), start)
        return tokens[:start], tokens[start:end], tokens[end:]

    def _decoded_length(self, tokens: list[int], count: int) -> int:
        return len(self.decode(tokens[:count])) if count else 0

    def _last_within(self, tokens: list[int], length: int) -> int:
        """The largest k whose first k tokens decode to at most `length` characters."""
        low, high = 0, len(tokens)
        while low < high:
            mid = (low + high + 1) // 2
            if self._decoded_length(tokens, mid) <= length:
                low = mid
            else:
                high = mid - 1
        return low

    def _first_reaching(self, tokens: list[int], length: int, low: int) -> int:
        """The smallest k >= low whose first k tokens decode to at least `length` characters."""
        high = len(tokens)
        while low < high:
            mid = (low + high) // 2
            if self._decoded_length(tokens, mid) >= length:
                high = mid
            else:
                low = mid + 1
        return low

    def single_token(self, marker: str) -> int:
        """The id of a marker that must be one token of this tokenizer."""
        ids = self.encode(marker)
        if len(ids) != 1:
            raise RenderError(
                f"renderer {self.name!r}: the tokenizer has no single token for {marker!r} "
                f"(it encodes to {len(ids)} tokens); use the tokenizer of the {self.name} family"
            )
        return ids[0]

    def parse_until_token(self, tokens: list[int], stop: int, strip: bool) -> tuple[Message, bool]:
        """The assistant message up to the first `stop` token; clean if that token occurs."""
        tokens = [int(t) for t in tokens]
        clean = stop in tokens
        if clean:
            tokens = tokens[: tokens.index(stop)]
        content = self.decode(tokens)
        return Message(role="assistant", content=content.strip() if strip else content), clean


def datum_from_tokens_weights(
    tokens: list[int], weights: list[float], max_length: int | None = None
) -> types.Datum:
    """A next-token-prediction datum: input tokens[:-1], target tokens[1:], weights[1:]
    (cut to the first `max_length` tokens first)."""
    if len(tokens) != len(weights):
        raise ValueError(f"weights: {len(weights)} weights for {len(tokens)} tokens")
    if max_length is not None:
        tokens, weights = tokens[:max_length], weights[:max_length]
    if len(tokens) < 2:
        raise ValueError(f"tokens: need at least 2 tokens for a datum, got {len(tokens)}")
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.asarray(tokens[1:], dtype=np.int64)),
            "weights": types.TensorData.from_numpy(np.asarray(weights[1:], dtype=np.float32)),
        },
    )
