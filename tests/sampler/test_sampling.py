"""Token choice (temperature, top-k, top-p, seeds, logprobs) and stop detection."""

from __future__ import annotations

import random

import pytest
import torch

from sampler.conftest import TINY
from treadle_models import load_tokenizer
from treadle_sampler.engine import SamplingOptions
from treadle_sampler.sampling import StopCheck, choose_tokens, truncate_logits


def draws(logits_V: torch.Tensor, options: SamplingOptions, n: int = 300) -> set[int]:
    generator = torch.Generator().manual_seed(0)
    rows = logits_V.expand(n, -1)
    tokens, _ = choose_tokens(rows, [options] * n, [generator] * n)
    return set(tokens)


def test_top_k_and_top_p_restrict_the_tokens_drawn() -> None:
    logits_V = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.05, 0.05]))
    assert draws(logits_V, SamplingOptions(max_tokens=1)) == {0, 1, 2, 3, 4}
    assert draws(logits_V, SamplingOptions(max_tokens=1, top_k=2)) == {0, 1}
    assert draws(logits_V, SamplingOptions(max_tokens=1, top_p=0.65)) == {0, 1}
    assert draws(logits_V, SamplingOptions(max_tokens=1, top_p=0.75)) == {0, 1, 2}
    assert draws(logits_V, SamplingOptions(max_tokens=1, temperature=0)) == {0}
    kept = truncate_logits(logits_V, top_k=3, top_p=0.5)
    assert torch.isfinite(kept).tolist() == [True, True, False, False, False]


def test_logprobs_are_of_the_tempered_distribution_and_greedy_reports_temperature_one() -> None:
    logits_1V = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    generator = torch.Generator().manual_seed(1)
    options = SamplingOptions(max_tokens=1, temperature=0.5)
    (token,), (logprob,) = choose_tokens(logits_1V, [options], [generator])
    tempered = torch.log_softmax(logits_1V[0] / 0.5, dim=-1)
    assert logprob == pytest.approx(float(tempered[token]), abs=1e-6)
    greedy = SamplingOptions(max_tokens=1, temperature=0)
    assert choose_tokens(logits_1V, [greedy], [None]) == ([0], [pytest.approx(-0.6931472)])


def test_with_top_k_or_top_p_the_logprob_is_renormalised_over_the_kept_tokens() -> None:
    logits_1V = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    for options in (
        SamplingOptions(max_tokens=1, top_k=2, seed=0),
        SamplingOptions(max_tokens=1, top_p=0.65, seed=0),
    ):
        (token,), (logprob,) = choose_tokens(logits_1V, [options], [torch.Generator()])
        assert token in (0, 1)
        assert logprob == pytest.approx(float(torch.log_softmax(logits_1V[0, :2], -1)[token]))


def test_the_same_seed_draws_the_same_token() -> None:
    logits_1V = torch.zeros(1, 1000)
    options = [SamplingOptions(max_tokens=1)]
    runs = [
        choose_tokens(logits_1V, options, [torch.Generator().manual_seed(seed)])[0]
        for seed in (7, 7, 8)
    ]
    assert runs[0] == runs[1] != runs[2]


def test_stops_by_token_id_eos_and_length() -> None:
    check = StopCheck(SamplingOptions(max_tokens=4, stop_token_ids=(9,)), [2], None)
    assert [check([5]), check([5, 9]), check([5, 2]), check([5, 6, 7, 8])] == [
        None,
        "stop",
        "stop",
        "length",
    ]
    with pytest.raises(ValueError, match="tokenizer"):
        StopCheck(SamplingOptions(max_tokens=4, stop_strings=("x",)), [], None)


def test_stop_strings_are_found_as_soon_as_the_text_holds_them() -> None:
    tokenizer = load_tokenizer(TINY)
    rng = random.Random(0)
    text = "Héllo wörld! The quick brown 狐 jumps — over 12345 lazy dogs.\n" * 3
    tokens = tokenizer.encode(text)
    assert len(tokens) > 40
    prefixes = [tokenizer.decode(tokens[:k]) for k in range(len(tokens) + 1)]
    for _ in range(60):
        start = rng.randrange(len(text) - 8)
        stop = text[start : start + rng.randint(1, 8)]
        check = StopCheck(SamplingOptions(max_tokens=10_000, stop_strings=(stop,)), [], tokenizer)
        expected = next(k for k, prefix in enumerate(prefixes) if stop in prefix)
        found = next(k for k in range(1, len(tokens) + 1) if check(tokens[:k]) == "stop")
        assert found == expected, stop
