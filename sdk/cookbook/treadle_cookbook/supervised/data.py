"""Supervised data: JSONL conversations to datums, and batches packed by token count.

A conversation file has one JSON object per line, `{"messages": [{"role": ..., "content": ...}]}`
(tinker-cookbook's conversation-file format). Every error names the file and line.

Key decision: the order of batches is a pure function of (seed, epoch), so that a run resumed from
step k trains on exactly the batches an uninterrupted run would have seen from step k on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from treadle import types
from treadle_cookbook.data import jsonl_records
from treadle_cookbook.renderers import (
    Message,
    Renderer,
    RenderError,
    TrainOnWhat,
    datum_from_tokens_weights,
)


class DatasetError(ValueError):
    """A dataset line that cannot be used; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Conversation:
    """A conversation and where it came from (`file:line`)."""

    messages: list[Message]
    source: str


def load_conversations(path: str | Path) -> list[Conversation]:
    """Every conversation of a JSONL file (blank lines are skipped)."""
    conversations = []
    for source, record in jsonl_records(path, DatasetError):
        if not isinstance(record, dict) or "messages" not in record:
            raise DatasetError(f"{source}: expected an object with a 'messages' list")
        conversations.append(Conversation(record["messages"], source))
    if not conversations:
        raise DatasetError(f"{path}: no conversations")
    return conversations


def conversations_to_datums(
    conversations: Sequence[Conversation],
    renderer: Renderer,
    max_length: int | None = None,
    train_on_what: TrainOnWhat = TrainOnWhat.ALL_ASSISTANT_MESSAGES,
) -> list[types.Datum]:
    """One datum per conversation, rendered and cut to `max_length` tokens. A conversation whose
    trained tokens all fall beyond the cut is an error, since it would teach nothing."""
    datums = []
    for conversation in conversations:
        try:
            tokens, weights = renderer.build_supervised_example(
                conversation.messages, train_on_what
            )
        except RenderError as error:
            raise DatasetError(f"{conversation.source}: {error}") from None
        cut = weights[1:max_length] if max_length is not None else weights[1:]
        if not any(cut):
            raise DatasetError(
                f"{conversation.source}: no trained token within max_length={max_length}"
            )
        datums.append(datum_from_tokens_weights(tokens, weights, max_length))
    return datums


def datum_tokens(datum: types.Datum) -> int:
    """Tokens a datum costs in a batch."""
    return datum.model_input.length


def datum_weight(datum: types.Datum) -> float:
    """Sum of a datum's loss weights: the number of trained tokens."""
    return float(np.sum(datum.loss_fn_inputs["weights"].to_numpy()))


class SupervisedDataset:
    """Datums in batches of at most `batch_size` sequences and `max_batch_tokens` tokens,
    reshuffled each epoch (tinker-cookbook's `get_batch` / `__len__` / `set_epoch`)."""

    def __init__(
        self,
        datums: Sequence[types.Datum],
        batch_size: int,
        max_batch_tokens: int | None = None,
        seed: int = 0,
    ) -> None:
        if not datums:
            raise DatasetError("datums: empty dataset")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens: must be >= 1, got {max_batch_tokens}")
        self.datums = list(datums)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for `epoch` (the same epoch always gives the same batches)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.datums))
        self.batches = self._pack([int(i) for i in order])

    def _pack(self, order: list[int]) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        tokens = 0
        for index in order:
            size = datum_tokens(self.datums[index])
            full = len(current) >= self.batch_size or (
                self.max_batch_tokens is not None and tokens + size > self.max_batch_tokens
            )
            if current and full:
                batches.append(current)
                current, tokens = [], 0
            current.append(index)
            tokens += size
        if current:
            batches.append(current)
        return batches

    def __len__(self) -> int:
        return len(self.batches)

    def get_batch(self, index: int) -> list[types.Datum]:
        """The datums of batch `index` of the current epoch."""
        return [self.datums[i] for i in self.batches[index]]

    def schedule(self, num_epochs: int) -> Iterator[tuple[int, int]]:
        """(epoch, batch index) of every step of `num_epochs` epochs, in training order."""
        for epoch in range(num_epochs):
            self.set_epoch(epoch)
            yield from ((epoch, index) for index in range(len(self)))
