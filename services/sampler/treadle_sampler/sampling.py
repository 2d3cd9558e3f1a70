"""Choosing the next token of each sequence, and deciding when a sequence ends.

Logprobs. The logprob reported for a sampled token is its logprob under the distribution it was
drawn from:

    logprob = log_softmax(truncate(logits / temperature))[token]   (temperature > 0)
    logprob = log_softmax(logits)[token]                           (temperature = 0, greedy)

in float32, through `treadle_models.target_logprobs` (the trainer's computation), where truncate
keeps the top_k tokens and the top_p nucleus (the others get -inf, so the kept ones renormalise).
This is the `q` an importance-sampling loss needs, and what vLLM reports (logprobs_mode
"processed_logprobs"). At temperature 1 without top_k/top_p it is the model's own distribution,
so it equals the trainer's forward logprob of the same token with the same adapter.

Stops. A sequence ends with "stop" when its last token is a stop token id or the end-of-sequence
token (that token is kept), or when the text of its tokens contains a stop string (the tokens that
complete it are kept); otherwise with "length" at max_tokens. A stop string is looked for only in
the decoded tail that could hold its end: a token decodes to at least one byte, so a string of b
bytes that ends in the newest token lies within the last b tokens; one more token of context
keeps a character split across tokens from hiding it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from treadle_models import target_logprobs
from treadle_sampler.engine import SamplingOptions, StopReason


def truncate_logits(scaled_V: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """`scaled_V` with every token outside the top k and the top-p nucleus set to -inf."""
    V = scaled_V.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(scaled_V, top_k).values[-1]
        scaled_V = scaled_V.masked_fill(scaled_V < kth, float("-inf"))
    if top_p < 1.0:
        sorted_V, order_V = torch.sort(scaled_V, descending=True)
        probs_V = torch.softmax(sorted_V, dim=-1)
        mass_before_V = torch.cumsum(probs_V, dim=-1) - probs_V
        sorted_V = sorted_V.masked_fill(mass_before_V > top_p, float("-inf"))
        scaled_V = torch.empty_like(scaled_V).scatter_(0, order_V, sorted_V)
    return scaled_V


def choose_tokens(
    logits_BV: torch.Tensor,
    options_B: Sequence[SamplingOptions],
    generators_B: Sequence[torch.Generator | None],
) -> tuple[list[int], list[float]]:
    """The next token of each row and its logprob (see the module docstring)."""
    logits_BV = logits_BV.float()
    temperatures_B = torch.tensor(
        [o.temperature if o.temperature > 0 else 1.0 for o in options_B],
        device=logits_BV.device,
    )
    scaled_BV = logits_BV / temperatures_B[:, None]
    tokens: list[torch.Tensor] = []
    drawn_from: list[torch.Tensor] = []  # each row's distribution, as logits
    for b, options in enumerate(options_B):
        if options.temperature == 0:
            tokens.append(torch.argmax(logits_BV[b]).reshape(1))
            drawn_from.append(logits_BV[b])
            continue
        kept_V = truncate_logits(scaled_BV[b], options.top_k, options.top_p)
        probs_V = torch.softmax(kept_V, dim=-1)
        tokens.append(torch.multinomial(probs_V, 1, generator=generators_B[b]))
        drawn_from.append(kept_V)
    tokens_B = torch.cat(tokens)
    logprobs_B = target_logprobs(torch.stack(drawn_from)[:, None, :], tokens_B[:, None])[:, 0]
    return tokens_B.tolist(), logprobs_B.tolist()


class StopCheck:
    """Decides, after each new token, whether a sequence has ended and why."""

    def __init__(
        self,
        options: SamplingOptions,
        eos_token_ids: Sequence[int],
        tokenizer: PreTrainedTokenizerBase | None,
    ) -> None:
        if options.stop_strings and tokenizer is None:
            raise ValueError("stop_strings need a tokenizer and this model has none")
        self.max_tokens = options.max_tokens
        self.token_ids = frozenset(options.stop_token_ids) | frozenset(eos_token_ids)
        self.strings = options.stop_strings
        self.tokenizer = tokenizer
        self.window = 1 + max((len(s.encode()) for s in self.strings), default=0)

    def __call__(self, tokens: Sequence[int]) -> StopReason | None:
        """Why `tokens` ends here, or None if generation goes on."""
        if tokens[-1] in self.token_ids:
            return "stop"
        if self.strings:
            assert self.tokenizer is not None
            tail = self.tokenizer.decode(
                list(tokens[-self.window :]),
                skip_special_tokens=False,
                clean_up_tokenization_spaces=False,
            )
            if any(s in tail for s in self.strings):
                return "stop"
        if len(tokens) >= self.max_tokens:
            return "length"
        return None
