"""A served base model as the ModelCapability message that trainers and samplers report.

Trainers add the losses they run (treadle_trainer.losses.RUNS); the scheduler passes both on in
GetCapabilities, so capabilities say what the workers actually serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from treadle.v1 import common_pb2


class ServedModel(Protocol):
    """What a worker knows of its base model (treadle_models.ModelSpec)."""

    @property
    def name(self) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def max_seq_len(self) -> int: ...
    @property
    def supported_ranks(self) -> tuple[int, ...]: ...
    @property
    def architecture(self) -> str: ...
    @property
    def tokenizer_id(self) -> str: ...
    @property
    def tokenizer_path(self) -> str: ...


def model_capability(
    model: ServedModel, loss_fns: Sequence[str] = ()
) -> common_pb2.ModelCapability:
    """The capability message of `model`, with the losses its trainer runs."""
    return common_pb2.ModelCapability(
        name=model.name,
        vocab_size=model.vocab_size,
        max_seq_len=model.max_seq_len,
        supported_ranks=list(model.supported_ranks),
        architecture=model.architecture,
        tokenizer_id=model.tokenizer_id,
        tokenizer_path=model.tokenizer_path,
        loss_fns=list(loss_fns),
    )
