"""The rule for token ids in a request: a datum's model input, a prompt, stop token ids.

Token ids are non-negative; where the served model is known (trainer, sampler) they are below its
vocabulary size, and a sequence fits its context length. The SDK, which does not know the model,
checks what it can.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from treadle.errors import bad_field


def check_tokens(
    field: str,
    tokens: Sequence[int] | np.ndarray,
    vocab_size: int | None = None,
    max_len: int | None = None,
    allow_empty: bool = False,
) -> None:
    """`tokens` (at `field`) are valid ids for the model; ValidationError naming `field`."""
    if len(tokens) == 0 and not allow_empty:
        raise bad_field(field, "has no tokens")
    if max_len is not None and len(tokens) > max_len:
        raise bad_field(field, f"{len(tokens)} tokens exceed the model's {max_len}-token limit")
    ids = np.asarray(tokens, dtype=np.int64)
    out = ids < 0 if vocab_size is None else (ids < 0) | (ids >= vocab_size)
    bad = np.flatnonzero(out)
    if bad.size:
        position = int(bad[0])
        bound = ">= 0" if vocab_size is None else f"in the vocabulary [0, {vocab_size})"
        raise bad_field(
            field, f"token id {int(ids[position])} at position {position} is not {bound}"
        )
