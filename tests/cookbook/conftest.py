"""Fixtures for the cookbook tests: the real SmolLM2 tokenizer, the same tokenizer dressed with
other families' published chat templates and special tokens, and SDK clients on the session's
local mesh (tiny-llama, which shares SmolLM2's tokenizer)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import treadle
from fixtures.mesh import TINY
from treadle_runtime.launcher import LocalMesh

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEMPLATES = Path(__file__).parent / "data" / "chat_templates"

__all__ = ["SMOLLM2", "TINY", "family_tokenizer", "service", "smol_tokenizer"]


@pytest.fixture(scope="session")
def smol_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's own tokenizer and ChatML chat template (offline)."""
    from treadle_models import load_tokenizer

    return load_tokenizer(SMOLLM2)


def _dressed(
    base: Any, template: str, special: list[str], bos: str | None, added: list[str]
) -> Any:
    tokenizer = copy.deepcopy(base)
    tokens: dict[str, Any] = {}
    if special:
        tokens["additional_special_tokens"] = special
    if bos:
        tokens["bos_token"] = bos
    if tokens:
        tokenizer.add_special_tokens(tokens)
    if added:
        tokenizer.add_tokens(added)
    tokenizer.chat_template = (TEMPLATES / template).read_text()
    return tokenizer


@pytest.fixture(scope="session")
def family_tokenizer(smol_tokenizer: Any) -> dict[str, Any]:
    """Tokenizers by family: `smollm2` as shipped; `qwen2_5`, `qwen3` and `llama3` are SmolLM2's
    vocabulary with that family's official chat template and special tokens added."""
    return {
        "smollm2": smol_tokenizer,
        "qwen2_5": _dressed(smol_tokenizer, "qwen2_5.jinja", [], None, []),
        "qwen3": _dressed(smol_tokenizer, "qwen3.jinja", [], None, ["<think>", "</think>"]),
        "llama3": _dressed(
            smol_tokenizer,
            "llama3.jinja",
            ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            "<|begin_of_text|>",
            [],
        ),
    }


@pytest.fixture
def service(mesh: LocalMesh) -> Iterator[treadle.ServiceClient]:
    """A ServiceClient on the session's mesh, closed after the test."""
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as client:
        yield client
