"""Preference pairs: JSONL files of `{"prompt": ..., "chosen": ..., "rejected": ...}` and their
datums.

`prompt` is a string (one user turn) or a list of messages ending with a user turn; `chosen` and
`rejected` are the two assistant replies (strings); an optional `kind` string groups pairs for
per-kind metrics. Every error names the file, the line and
the field. A pair becomes two datums, chosen then rejected, whose weights are 1 on the reply's
tokens (and its end-of-turn token) only, so Σ w·lp is the reply's log-likelihood given the
prompt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from treadle import types
from treadle_cookbook.data import jsonl_records
from treadle_cookbook.renderers import (
    Message,
    Renderer,
    RenderError,
    TrainOnWhat,
    datum_from_tokens_weights,
    validate_messages,
)


class PreferenceDataError(ValueError):
    """A preference line that cannot be used; the message starts with `file:line:`."""


@dataclass(frozen=True)
class PreferencePair:
    """A prompt conversation, the preferred and the dispreferred reply, and `file:line`."""

    prompt: list[Message]
    chosen: str
    rejected: str
    source: str = ""
    kind: str = ""


def parse_pair(record: object, source: str) -> PreferencePair:
    """A pair from one decoded JSON line, checked field by field."""
    if not isinstance(record, dict):
        raise PreferenceDataError(f"{source}: expected an object, got {type(record).__name__}")
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PreferenceDataError(f"{source}: prompt: is empty")
        messages = [Message(role="user", content=prompt)]
    elif isinstance(prompt, list):
        try:
            messages = validate_messages(prompt)
        except RenderError as error:
            raise PreferenceDataError(f"{source}: prompt: {error}") from None
        if not messages or messages[-1]["role"] != "user":
            raise PreferenceDataError(f"{source}: prompt: must end with a user message")
    else:
        raise PreferenceDataError(f"{source}: prompt: expected a string or a list of messages")
    replies = []
    for key in ("chosen", "rejected"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            raise PreferenceDataError(f"{source}: {key}: expected a non-empty string")
        replies.append(value)
    if replies[0] == replies[1]:
        raise PreferenceDataError(f"{source}: chosen and rejected are the same reply")
    kind = record.get("kind", "")
    if not isinstance(kind, str):
        raise PreferenceDataError(f"{source}: kind: expected a string")
    return PreferencePair(messages, replies[0], replies[1], source, kind)


def load_preference_pairs(path: str | Path) -> list[PreferencePair]:
    """Every pair of a JSONL file (blank lines skipped)."""
    records = jsonl_records(path, PreferenceDataError)
    pairs = [parse_pair(record, source) for source, record in records]
    if not pairs:
        raise PreferenceDataError(f"{path}: no preference pairs")
    return pairs


def pair_to_datums(
    pair: PreferencePair, renderer: Renderer, max_length: int | None = None
) -> tuple[types.Datum, types.Datum]:
    """The chosen and the rejected conversation as datums weighted on the reply only."""
    datums = []
    for reply in (pair.chosen, pair.rejected):
        messages = [*pair.prompt, Message(role="assistant", content=reply)]
        try:
            tokens, weights = renderer.build_supervised_example(
                messages, TrainOnWhat.LAST_ASSISTANT_MESSAGE
            )
        except RenderError as error:
            raise PreferenceDataError(f"{pair.source}: {error}") from None
        if max_length is not None and not any(weights[1:max_length]):
            raise PreferenceDataError(
                f"{pair.source}: no reply token within max_length={max_length}"
            )
        datums.append(datum_from_tokens_weights(tokens, weights, max_length))
    return datums[0], datums[1]


class PreferenceDataset:
    """Pairs in shuffled batches of `batch_size`; the order is a function of (seed, epoch)."""

    def __init__(
        self,
        pairs: Sequence[PreferencePair],
        renderer: Renderer,
        batch_size: int,
        max_length: int | None = None,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.pairs = [pair_to_datums(p, renderer, max_length) for p in pairs]
        self.kinds = [p.kind for p in pairs]
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return max(1, len(self.pairs) // self.batch_size)

    def batch_indices(self, index: int, epoch: int = 0) -> list[int]:
        """The pairs of batch `index` of `epoch`."""
        order = list(range(len(self.pairs)))
        random.Random(self.seed * 7919 + epoch).shuffle(order)
        return order[index * self.batch_size : (index + 1) * self.batch_size]

    def get_batch(self, index: int, epoch: int = 0) -> list[types.Datum]:
        """Batch `index` of `epoch` as datums [chosen_0, rejected_0, chosen_1, ...]."""
        return [datum for i in self.batch_indices(index, epoch) for datum in self.pairs[i]]
