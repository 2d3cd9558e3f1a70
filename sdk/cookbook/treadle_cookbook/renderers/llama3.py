"""Llama 3 instruct format: `<|begin_of_text|>` once, then
`<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>` per turn, content trimmed,
as Meta's Llama 3 chat template writes it (no date lines: those came with Llama 3.1's template).
"""

from __future__ import annotations

from typing import Any

from treadle_cookbook.renderers.base import BaseRenderer, Message, MessageText

BEGIN = "<|begin_of_text|>"
EOT = "<|eot_id|>"


class Llama3Renderer(BaseRenderer):
    """Llama 3 turns; the end-of-turn token `<|eot_id|>` is the stop sequence."""

    name = "llama3"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        self.end_token = self.single_token(EOT)
        for marker in (BEGIN, "<|start_header_id|>", "<|end_header_id|>"):
            self.single_token(marker)

    def prefix_text(self, messages: list[Message]) -> str:
        return BEGIN

    @staticmethod
    def _header(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    def message_text(
        self, index: int, messages: list[Message], closing: bool = False
    ) -> MessageText:
        message = messages[index]
        return MessageText(self._header(message["role"]), f"{message['content'].strip()}{EOT}")

    def generation_text(self, messages: list[Message], role: str) -> str:
        return self._header(role)

    def get_stop_sequences(self) -> list[int]:
        return [self.end_token]

    def parse_response(self, tokens: list[int]) -> tuple[Message, bool]:
        return self.parse_until_token(tokens, self.end_token, strip=True)
