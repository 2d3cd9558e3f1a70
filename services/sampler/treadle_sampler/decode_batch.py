"""The running decode batch: its sequences and their shared, left-padded KV cache.

Sequences of different requests (different prompts, lengths and adapters) decode together. The
cache holds one row per sequence, left-padded to a common length L with `mask_BL` marking the real
positions; rotary positions are passed explicitly per row, so a row's keys never depend on how
much padding sits in front of them. New sequences join by left-padding the shorter of the two
caches; finished ones leave by row selection, after which padding columns that no row uses any
more are dropped. Only full-attention caches (`DynamicLayer`) are handled.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

if TYPE_CHECKING:
    from treadle_sampler.torch_engine import SampleJob


@dataclass
class Row:
    """One sequence being generated."""

    job: SampleJob
    index: int  # in [0, job.num_samples)
    generator: torch.Generator | None  # None when greedy
    length: int  # tokens of this row held in the cache (the newest token is not yet)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


def full_attention_layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The layers of `cache`; TypeError unless every one is a plain full-attention layer."""
    layers = list(cache.layers)
    for layer in layers:
        if type(layer) is not DynamicLayer:
            raise TypeError(
                f"{type(layer).__name__} caches are not supported (full attention only)"
            )
    return typing.cast(list[DynamicLayer], layers)


def _kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    assert layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


def _pad_left(tensor: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class DecodeBatch:
    """Rows plus the cache and mask they share (row b of each belongs to rows[b])."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask_BL: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: list[Row], cache: DynamicCache, mask_BL: torch.Tensor) -> None:
        """Append `rows`, whose cache and mask have one row each, in order."""
        if self.cache is None or self.mask_BL is None:
            self.rows, self.cache, self.mask_BL = list(rows), cache, mask_BL
            return
        L = max(self.mask_BL.shape[1], mask_BL.shape[1])
        old, new = L - self.mask_BL.shape[1], L - mask_BL.shape[1]
        pairs = zip(full_attention_layers(self.cache), full_attention_layers(cache), strict=True)
        for mine, theirs in pairs:
            (keys, values), (new_keys, new_values) = _kv(mine), _kv(theirs)
            mine.keys = torch.cat([_pad_left(keys, old, -2), _pad_left(new_keys, new, -2)])
            mine.values = torch.cat([_pad_left(values, old, -2), _pad_left(new_values, new, -2)])
        self.mask_BL = torch.cat([_pad_left(self.mask_BL, old, 1), _pad_left(mask_BL, new, 1)])
        self.rows.extend(rows)

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs of one decode step: newest token [B, 1], mask [B, L+1], positions [B, 1]."""
        assert self.mask_BL is not None
        device = self.mask_BL.device
        ids_B1 = torch.tensor([[row.tokens[-1]] for row in self.rows], device=device)
        positions_B1 = torch.tensor([[row.length] for row in self.rows], device=device)
        mask_BL = F.pad(self.mask_BL, (0, 1), value=1)
        return ids_B1, mask_BL, positions_B1

    def stepped(self, mask_BL: torch.Tensor) -> None:
        """Record that a decode step appended each row's newest token to the cache."""
        self.mask_BL = mask_BL
        for row in self.rows:
            row.length += 1

    def keep(self, kept: list[int]) -> None:
        """Keep only the rows at indices `kept` (in order), then drop unused padding."""
        if len(kept) == len(self.rows):
            return
        if not kept:
            self.rows, self.cache, self.mask_BL = [], None, None
            return
        assert self.cache is not None and self.mask_BL is not None
        index = torch.tensor(kept, device=self.mask_BL.device)
        mask_BL = self.mask_BL[index]
        start = int(mask_BL.any(dim=0).int().argmax())  # first column some row still uses
        for layer in full_attention_layers(self.cache):
            keys, values = _kv(layer)
            layer.keys, layer.values = keys[index, :, start:], values[index, :, start:]
        self.mask_BL = mask_BL[:, start:]
        self.rows = [self.rows[i] for i in kept]


def select_rows(cache: DynamicCache, index: torch.Tensor) -> None:
    """Replace every layer of `cache` by its rows `index` (repeats allowed: one prefill, n rows)."""
    for layer in full_attention_layers(cache):
        keys, values = _kv(layer)
        layer.keys, layer.values = keys[index], values[index]
