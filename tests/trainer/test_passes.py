"""Cutting a wave into passes: every datum exactly once, each op's rows together, and the token
and adapter limits respected; a wave that fits is one pass."""

from __future__ import annotations

import numpy as np
import pytest

from treadle_trainer.passes import plan_passes


def _check(passes, lengths, model_ids, max_tokens, max_adapters):
    seen = sorted((op, d) for part in passes for op, rows in part for d in rows)
    assert seen == sorted((op, d) for op, ls in enumerate(lengths) for d in range(len(ls)))
    for part in passes:
        rows = [lengths[op][d] for op, ds in part for d in ds]
        assert len(rows) * max(rows) <= max_tokens or len(rows) == 1
        if max_adapters:
            assert len({model_ids[op] for op, _ in part}) <= max_adapters
        ops = [op for op, _ in part]
        assert len(ops) == len(set(ops))  # one contiguous block per op


def test_a_wave_that_fits_is_one_pass_with_one_block_per_op():
    lengths = [[64, 64], [10, 30, 20], [64]]
    passes = plan_passes(lengths, ["a", "b", "c"], max_tokens=8192)
    assert len(passes) == 1
    assert [op for op, _ in passes[0]] == [0, 2, 1]  # longest datum first
    assert passes[0][2] == (1, [1, 2, 0])


@pytest.mark.parametrize(("max_tokens", "max_adapters"), [(200, 0), (8192, 2), (300, 3)])
def test_limits_hold_and_nothing_is_lost(max_tokens, max_adapters):
    rng = np.random.default_rng(max_tokens + max_adapters)
    lengths = [rng.integers(1, 60, rng.integers(1, 6)).tolist() for _ in range(7)]
    model_ids = [f"m{i}" for i in range(7)]
    passes = plan_passes(lengths, model_ids, max_tokens, max_adapters)
    _check(passes, lengths, model_ids, max_tokens, max_adapters)
    assert len(passes) > 1


def test_five_adapters_under_a_budget_of_two_take_three_passes():
    passes = plan_passes([[8]] * 5, [f"m{i}" for i in range(5)], 8192, max_adapters=2)
    assert [len(part) for part in passes] == [2, 2, 1]
