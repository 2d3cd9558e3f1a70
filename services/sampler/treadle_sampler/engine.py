"""The sampling engine interface, the plain data that crosses it, and the one place that picks one.

An engine serves one base model and any number of loaded adapters. Adapters are named by keys the
caller chooses and loaded from PEFT folders on local disk (the adapter cache in `adapters.py`
decides what is loaded and when it is evicted; `local_adapters.py` writes the folders; an engine
only loads and forgets). `sample` is an async iterator that yields each sequence as soon as it
finishes, so the service can stream it; prompt logprobs are `compute_logprobs` of the prompt.

Three implementations, chosen in `make_engine` only: `vllm_engine.VLLMEngine` (vLLM's AsyncLLM,
CPU or GPU: the default), `sglang_engine.SGLangEngine` (a thin client of an SGLang server's HTTP
API, GPU) and `torch_engine.TorchEngine` (transformers + peft, for machines vLLM has no build for).
Each reports, for each sampled token, its logprob under the distribution it was drawn from (see
`sampling.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from treadle_models import ModelSpec
from treadle_sampler.config import SamplerConfig

StopReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample one request (already validated)."""

    max_tokens: int
    temperature: float = 1.0  # 0 is greedy
    top_k: int = 0  # <= 0 keeps every token
    top_p: float = 1.0  # in (0, 1]
    seed: int | None = None  # sequence i uses seed + i; None draws a random seed
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()


@dataclass
class Completion:
    """One finished sequence: generated tokens, the logprob of each, and why it ended."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: StopReason


class SamplingEngine(Protocol):
    """Generates from one base model with any loaded adapter (None = the base model)."""

    name: str  # "vllm", "sglang" or "torch"
    spec: ModelSpec  # the base model served

    def sample(
        self,
        adapter: str | None,
        prompt: Sequence[int],
        num_samples: int,
        options: SamplingOptions,
    ) -> AsyncIterator[tuple[int, Completion]]:
        """Yield (index, completion) for each of `num_samples` sequences as each finishes."""
        ...

    async def compute_logprobs(self, adapter: str | None, tokens: Sequence[int]) -> list[float]:
        """Logprob of tokens[1:] given their prefix (length len(tokens) - 1)."""
        ...

    async def load_adapter(self, key: str, folder: Path) -> None:
        """Load the PEFT adapter in `folder` (adapter_config.json + adapter_model.safetensors).

        ValueError when it is not an adapter this base model can load.
        """
        ...

    async def evict(self, key: str) -> None:
        """Forget adapter `key` (no request may be using it)."""
        ...

    async def close(self) -> None:
        """Stop generating and release the model."""
        ...


def make_engine(config: SamplerConfig) -> SamplingEngine:
    """The engine named by `config.engine`, serving `config.base_model`."""
    if config.engine == "vllm":
        from treadle_sampler.vllm_engine import VLLMEngine

        return VLLMEngine.from_config(config)
    if config.engine == "torch":
        from treadle_sampler.torch_engine import TorchEngine

        return TorchEngine.from_config(config)
    if config.engine == "sglang":
        from treadle_sampler.sglang_engine import SGLangEngine

        return SGLangEngine.from_config(config)
    raise ValueError(f"engine: {config.engine!r} is not available")
