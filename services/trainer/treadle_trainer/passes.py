"""Cutting a wave's rows into batched passes.

A wave normally runs as one pass. It is cut only when the padded batch would exceed
`max_tokens` (rows × longest row) or hold more distinct adapters than `max_adapters` (the
residency budget; 0 = no limit). Ops are taken longest datum first and each op's datums longest
first, so rows of similar length share a pass and padding stays small; an op's rows stay
together (one contiguous block per adapter) unless the op alone is too large for one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

Pass = list[tuple[int, list[int]]]  # (op index, datum indices) in row order


def plan_passes(
    lengths: Sequence[Sequence[int]],
    model_ids: Sequence[str],
    max_tokens: int,
    max_adapters: int = 0,
) -> list[Pass]:
    """Passes covering every datum of every op exactly once (`lengths[op][datum]` tokens)."""
    order = sorted(range(len(lengths)), key=lambda op: -max(lengths[op], default=0))
    passes: list[Pass] = []
    rows = longest = 0
    models: set[str] = set()
    for op in order:
        datums = sorted(range(len(lengths[op])), key=lambda d: -lengths[op][d])
        for d in datums:
            t = lengths[op][d]
            fits = passes and (rows + 1) * max(longest, t) <= max_tokens
            new_model = model_ids[op] not in models
            if fits and new_model and max_adapters and len(models) >= max_adapters:
                fits = False
            if not fits:
                passes.append([])
                rows, longest, models = 0, 0, set()
            current = passes[-1]
            if not current or current[-1][0] != op:
                current.append((op, []))
            current[-1][1].append(d)
            rows, longest = rows + 1, max(longest, t)
            models.add(model_ids[op])
    return passes
