"""Chat renderers: conversations to tokens with per-token loss weights, generation prompts, stop
sequences, and sampled tokens back to messages (tinker-cookbook's renderer interface).

    renderer = get_renderer("chatml", tokenizer)
    tokens, weights = renderer.build_supervised_example(messages)
    datum = datum_from_tokens_weights(tokens, weights, max_length=2048)

The renderer's `name` is what a run records in its checkpoints' metadata, so that later sampling
and serving reuse the exact format.
"""

from __future__ import annotations

from typing import Any

from treadle_cookbook.renderers.base import (
    ROLES,
    BaseRenderer,
    Message,
    Renderer,
    RenderError,
    TrainOnWhat,
    datum_from_tokens_weights,
    validate_messages,
)
from treadle_cookbook.renderers.chatml import ChatMLRenderer, template_default_system_prompt
from treadle_cookbook.renderers.llama3 import Llama3Renderer
from treadle_cookbook.renderers.qwen3 import Qwen3Renderer, split_thinking
from treadle_cookbook.renderers.role_colon import RoleColonRenderer

RENDERER_NAMES = ("chatml", "qwen3", "qwen3_disable_thinking", "llama3", "role_colon")


def get_renderer(name: str, tokenizer: Any) -> Renderer:
    """The renderer called `name` over `tokenizer` (names: RENDERER_NAMES)."""
    if name == "chatml":
        return ChatMLRenderer(tokenizer, template_default_system_prompt(tokenizer))
    if name == "qwen3":
        return Qwen3Renderer(tokenizer, enable_thinking=True)
    if name == "qwen3_disable_thinking":
        return Qwen3Renderer(tokenizer, enable_thinking=False)
    if name == "llama3":
        return Llama3Renderer(tokenizer)
    if name == "role_colon":
        return RoleColonRenderer(tokenizer)
    raise RenderError(f"renderer: unknown renderer {name!r} (known: {', '.join(RENDERER_NAMES)})")


__all__ = [
    "RENDERER_NAMES",
    "ROLES",
    "BaseRenderer",
    "ChatMLRenderer",
    "Llama3Renderer",
    "Message",
    "Qwen3Renderer",
    "RenderError",
    "Renderer",
    "RoleColonRenderer",
    "TrainOnWhat",
    "datum_from_tokens_weights",
    "get_renderer",
    "split_thinking",
    "template_default_system_prompt",
    "validate_messages",
]
