"""ChatML, the format of SmolLM2 and Qwen2.5: `<|im_start|>{role}\\n{content}<|im_end|>\\n`.

Key decision: a model family's default system prompt (SmolLM2 and Qwen2.5 insert one when the
conversation has none) is part of the format, so `get_renderer("chatml", tokenizer)` reads it from
the tokenizer's own chat template and the rendering matches `apply_chat_template` exactly.
"""

from __future__ import annotations

from typing import Any

from treadle_cookbook.renderers.base import BaseRenderer, Message, MessageText

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


class ChatMLRenderer(BaseRenderer):
    """ChatML turns; an optional default system prompt when the first turn is not a system one."""

    name = "chatml"

    def __init__(self, tokenizer: Any, default_system_prompt: str | None = None) -> None:
        super().__init__(tokenizer)
        self.default_system_prompt = default_system_prompt
        self.end_token = self.single_token(IM_END)
        self.single_token(IM_START)

    def prefix_text(self, messages: list[Message]) -> str:
        if self.default_system_prompt is None or (messages and messages[0]["role"] == "system"):
            return ""
        return f"{IM_START}system\n{self.default_system_prompt}{IM_END}\n"

    def message_text(
        self, index: int, messages: list[Message], closing: bool = False
    ) -> MessageText:
        message = messages[index]
        return MessageText(f"{IM_START}{message['role']}\n", f"{message['content']}{IM_END}", "\n")

    def generation_text(self, messages: list[Message], role: str) -> str:
        return f"{IM_START}{role}\n"

    def get_stop_sequences(self) -> list[int]:
        return [self.end_token]

    def parse_response(self, tokens: list[int]) -> tuple[Message, bool]:
        return self.parse_until_token(tokens, self.end_token, strip=False)


def template_default_system_prompt(tokenizer: Any) -> str | None:
    """The system prompt the tokenizer's ChatML chat template inserts when a conversation has
    none, or None (no template, not ChatML, or no default)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    probe = "\x1fprobe\x1f"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False)
    except Exception:  # a template that cannot render a lone user turn has no default to offer
        return None
    head = f"{IM_START}system\n"
    if not isinstance(text, str) or not text.startswith(head) or IM_END not in text:
        return None
    system = text[len(head) : text.index(IM_END)]
    return None if probe in system else system
