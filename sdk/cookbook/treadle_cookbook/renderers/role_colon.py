"""A plain `Role: content` format for base models without a chat template:

    System: ...\\n\\nUser: ...\\n\\nAssistant: ...\\n\\n

Key decision: the stop sequence is the string `\\n\\nUser:`, so a training example that ends
with a trained assistant turn also trains the `User:` that completes it; the model learns to stop.
A sampled turn also ends cleanly on the tokenizer's end-of-sequence token.
"""

from __future__ import annotations

from typing import Any

from treadle_cookbook.renderers.base import BaseRenderer, Message, MessageText

STOP = "\n\nUser:"


class RoleColonRenderer(BaseRenderer):
    """`Role: content` turns separated by blank lines; starts with the tokenizer's own BOS, if
    its encoding adds one."""

    name = "role_colon"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        self.bos_tokens = list(tokenizer.encode("", add_special_tokens=True))

    def prefix_tokens(self, messages: list[Message]) -> list[int]:
        return list(self.bos_tokens)

    def message_text(
        self, index: int, messages: list[Message], closing: bool = False
    ) -> MessageText:
        message = messages[index]
        body = f" {message['content'].strip()}\n\n"
        if closing and message["role"] == "assistant":
            body += "User:"
        return MessageText(f"{message['role'].capitalize()}:", body)

    def generation_text(self, messages: list[Message], role: str) -> str:
        return f"{role.capitalize()}:"

    def get_stop_sequences(self) -> list[str]:
        return [STOP]

    def parse_response(self, tokens: list[int]) -> tuple[Message, bool]:
        tokens = [int(t) for t in tokens]
        eos = self.tokenizer.eos_token_id
        ended_with_eos = bool(tokens) and eos is not None and tokens[-1] == eos
        if ended_with_eos:
            tokens = tokens[:-1]
        text = self.decode(tokens)
        if STOP in text:
            return Message(role="assistant", content=text.split(STOP)[0].strip()), True
        return Message(role="assistant", content=text.strip()), ended_with_eos
