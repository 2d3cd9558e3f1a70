"""Qwen3's ChatML with reasoning: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}` in assistant
turns, as Qwen3's chat template writes it.

Key decision: the template's own rules are kept exactly. Reasoning is dropped from assistant turns
before the last user turn; the turn after the last user turn is framed with a (possibly empty)
think block. With thinking, the model writes that block itself, so it is trained; with thinking
disabled the empty block belongs to the prompt (`<think>\\n\\n</think>\\n\\n` ends the generation
prompt), so it is not trained.
"""

from __future__ import annotations

from typing import Any

from treadle_cookbook.renderers.base import Message, MessageText
from treadle_cookbook.renderers.chatml import IM_END, IM_START, ChatMLRenderer

EMPTY_THINK = "<think>\n\n</think>\n\n"


def split_thinking(content: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant turn, the way Qwen3's template splits it."""
    if "</think>" not in content:
        return "", content
    before, _, after = content.rpartition("</think>")
    reasoning = before.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, after.lstrip("\n")


class Qwen3Renderer(ChatMLRenderer):
    """Qwen3 with thinking on (`qwen3`) or off (`qwen3_disable_thinking`)."""

    def __init__(self, tokenizer: Any, enable_thinking: bool = True) -> None:
        super().__init__(tokenizer, default_system_prompt=None)
        self.enable_thinking = enable_thinking
        self.name = "qwen3" if enable_thinking else "qwen3_disable_thinking"

    def message_text(
        self, index: int, messages: list[Message], closing: bool = False
    ) -> MessageText:
        message = messages[index]
        head = f"{IM_START}{message['role']}\n"
        if message["role"] != "assistant":
            return MessageText(head, f"{message['content']}{IM_END}", "\n")
        reasoning, answer = split_thinking(message["content"])
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        if last_user == -1:
            last_user = len(messages) - 1
        is_last = index == len(messages) - 1
        if index > last_user and (is_last or reasoning):
            block = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n"
            if block == EMPTY_THINK and not self.enable_thinking:
                return MessageText(head + block, f"{answer}{IM_END}", "\n")
            return MessageText(head, f"{block}{answer}{IM_END}", "\n")
        return MessageText(head, f"{answer}{IM_END}", "\n")

    def generation_text(self, messages: list[Message], role: str) -> str:
        if role == "assistant" and not self.enable_thinking:
            return f"{IM_START}{role}\n{EMPTY_THINK}"
        return f"{IM_START}{role}\n"
