"""The limits of a sampling request, checked by the SDK before sending and by the sampler.

Fields are named as the request spells them (`sampling_params.top_p`, `prompt`, `num_samples`).
The check that needs the served model's context length takes it as an argument; the SDK, which
does not know it, leaves that one to the sampler. Prompt tokens are checked by tokens.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from treadle.errors import bad_field

DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
TOP_K_OFF = -1  # top_k <= 0 keeps every token


def check_params(
    max_tokens: int | None,
    temperature: float,
    top_p: float,
    stop_strings: Sequence[str] = (),
) -> None:
    """The model-independent limits of sampling params (ValidationError naming the field)."""
    if max_tokens is None or max_tokens <= 0:
        raise bad_field("sampling_params.max_tokens", f"must be > 0, got {max_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise bad_field("sampling_params.temperature", f"must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise bad_field("sampling_params.top_p", f"must be in (0, 1], got {top_p}")
    for text in stop_strings:
        if not text:
            raise bad_field("sampling_params.stop_strings", "an empty stop string")


def check_num_samples(num_samples: int, limit: int | None = None) -> None:
    """At least one sample, and at most `limit` when the server sets one."""
    if num_samples < 1 or (limit is not None and num_samples > limit):
        bound = f"1..{limit}" if limit is not None else ">= 1"
        raise bad_field("num_samples", f"must be in {bound}, got {num_samples}")


def check_length(prompt_length: int, max_tokens: int, max_seq_len: int) -> None:
    """The prompt with its completion fits the model's context (the prompt alone is checked
    by tokens.check_tokens)."""
    if prompt_length + max_tokens > max_seq_len:
        raise bad_field(
            "sampling_params.max_tokens",
            f"prompt ({prompt_length}) + max_tokens ({max_tokens}) exceeds the model's "
            f"{max_seq_len}-token limit",
        )
