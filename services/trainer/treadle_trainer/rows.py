"""A pass's datums as tensors: right-padded rows, and per-token loss inputs.

Rows are right-padded to the longest datum, so every row's positions start at 0 and a padding
mask (only when some row is shorter) keeps attention off the padding. The unembedding and the
loss only ever see real tokens: `real_tokens` drops the padding from a flat [B·T, ...] tensor
and `all_tokens` puts a gradient back in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from treadle_trainer.inputs import DatumArrays
from treadle_trainer.losses import LossInputs

PAD_ID = 0


@dataclass
class PaddedRows:
    """Datums as right-padded rows [B, T] on the device, and where their real tokens are."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    lengths: list[int]
    attention_mask: torch.Tensor | None  # None when no row is padded
    real: torch.Tensor | None  # flat indices of real tokens; None when no row is padded

    @property
    def B(self) -> int:
        """Rows."""
        return len(self.lengths)

    @property
    def T(self) -> int:
        """Longest row."""
        return int(self.input_ids.shape[1])

    @classmethod
    def of(cls, datums: list[DatumArrays], device: torch.device) -> PaddedRows:
        """Rows of `datums` (positions start at 0 in every row: right padding)."""
        lengths = [len(d.tokens) for d in datums]
        B, T = len(datums), max(lengths)
        input_ids = torch.full((B, T), PAD_ID, dtype=torch.long)
        targets = torch.full((B, T), PAD_ID, dtype=torch.long)
        for b, datum in enumerate(datums):
            input_ids[b, : lengths[b]] = torch.tensor(datum.tokens)
            targets[b, : lengths[b]] = torch.tensor(datum.targets)
        mask = real = None
        if min(lengths) < T:
            mask_BT = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
            mask = mask_BT.to(device)
            real = mask_BT.reshape(-1).nonzero().squeeze(1).to(device)
        return cls(input_ids.to(device), targets.to(device), lengths, mask, real)

    def real_tokens(self, flat: torch.Tensor) -> torch.Tensor:
        """The entries of a flat [B·T, ...] tensor that belong to real tokens."""
        return flat if self.real is None else flat.index_select(0, self.real)

    def all_tokens(self, real: torch.Tensor) -> torch.Tensor:
        """A flat [B·T, ...] tensor from its real-token entries (zeros on padding)."""
        if self.real is None:
            return real
        return real.new_zeros((self.B * self.T, *real.shape[1:])).index_copy_(0, self.real, real)


def _column(datums: list[DatumArrays], name: str, default: float) -> list[np.ndarray]:
    """Datum input `name` of each datum, float32 [T_i]; `default` where a datum has none."""
    return [
        np.full(len(d.tokens), default, np.float32)
        if getattr(d, name) is None
        else getattr(d, name)
        for d in datums
    ]


# DatumArrays field, LossInputs field and the value of a datum that does not carry it (NaN:
# an optional input whose absence the loss itself resolves; see LossInputs)
_COLUMNS = (
    ("weights", "weights_NT", 1.0),
    ("advantages", "advantages_NT", 0.0),
    ("logprobs", "sampler_logprobs_NT", 0.0),
    ("clip_low", "clip_low_NT", np.nan),
    ("clip_high", "clip_high_NT", np.nan),
    ("ratio_mask", "ratio_mask_NT", np.nan),
)


def flat_loss_inputs(datums: list[DatumArrays], device: torch.device) -> LossInputs:
    """Per-token loss inputs of datums laid end to end, shape [1, Σ T_i]."""
    lengths = [len(d.tokens) for d in datums]
    columns = {
        field: torch.from_numpy(np.concatenate(_column(datums, name, default)))[None].to(device)
        for name, field, default in _COLUMNS
    }
    sequence = np.repeat(np.arange(len(datums)), lengths)
    return LossInputs(
        mask_NT=torch.ones((1, sum(lengths)), device=device),
        sequence_NT=torch.from_numpy(sequence)[None].to(device),
        **columns,
    )


def loss_inputs(datums: list[DatumArrays], T: int, device: torch.device) -> LossInputs:
    """Per-token loss inputs of datums right-padded to [N, T] (zeros on padding)."""
    N = len(datums)
    mask = torch.zeros((N, T))
    columns = {field: torch.zeros((N, T)) for _, field, _ in _COLUMNS}
    for n, d in enumerate(datums):
        t = len(d.tokens)
        mask[n, :t] = 1.0
        for name, field, default in _COLUMNS:
            columns[field][n, :t] = torch.tensor(_column([d], name, default)[0])
    sequence = torch.arange(N)[:, None].expand(N, T).contiguous()
    return LossInputs(
        mask_NT=mask.to(device),
        sequence_NT=sequence.to(device),
        **{field: column.to(device) for field, column in columns.items()},
    )
