"""Checks of sample and logprob requests, turning wire messages into engine arguments.

Every failure is INVALID_ARGUMENT with a message that starts with the offending field's path
(`prompt`, `num_samples`, `sampling_params.top_p`, ...), raised before any work starts, so a bad
request never reaches the engine and never disturbs the requests running there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from treadle.paths import parse_path
from treadle.v1 import common_pb2
from treadle_models import ModelSpec
from treadle_runtime.errors import invalid
from treadle_sampler.engine import SamplingOptions


@dataclass(frozen=True)
class SampleCall:
    """A validated sample request."""

    path: str | None  # canonical sampler checkpoint path; None = the base model
    prompt: list[int]
    num_samples: int
    options: SamplingOptions
    include_prompt_logprobs: bool


def weights_path(model_path: str, base_model: str, spec: ModelSpec) -> str | None:
    """The canonical adapter path of a request, or None for the base model."""
    if base_model and base_model != spec.name:
        message = f"{base_model!r} is not served here (this sampler serves {spec.name!r})"
        raise invalid("base_model", message)
    if not model_path:
        if not base_model:
            raise invalid("base_model", "required when model_path is empty")
        return None
    try:
        parsed = parse_path(model_path)
    except ValueError as exc:
        raise invalid("model_path", str(exc)) from None
    if parsed.kind != "sampler":
        raise invalid(
            "model_path", f"{model_path} is a state checkpoint; sample from a sampler_weights path"
        )
    return str(parsed)


def prompt_tokens(model_input: common_pb2.ModelInput, spec: ModelSpec) -> list[int]:
    """The prompt's tokens, concatenated in chunk order and checked against the vocabulary."""
    tokens: list[int] = []
    for i, chunk in enumerate(model_input.chunks):
        if chunk.WhichOneof("chunk") != "encoded_text":
            raise invalid(f"prompt.chunks[{i}]", "only encoded_text chunks are accepted")
        tokens.extend(chunk.encoded_text.tokens)
    if not tokens:
        raise invalid("prompt", "must hold at least one token")
    for position, token in enumerate(tokens):
        if not 0 <= token < spec.vocab_size:
            raise invalid(
                "prompt",
                f"token id {token} at position {position} is outside the vocabulary "
                f"[0, {spec.vocab_size})",
            )
    if len(tokens) > spec.max_seq_len:
        raise invalid(
            "prompt", f"{len(tokens)} tokens exceed the model's {spec.max_seq_len}-token limit"
        )
    return tokens


def sampling_options(
    params: common_pb2.SamplingParams, prompt_length: int, spec: ModelSpec
) -> SamplingOptions:
    """The engine's options for `params`, checked against the prompt and the model's limits."""
    if params.max_tokens <= 0:
        raise invalid("sampling_params.max_tokens", f"must be > 0, got {params.max_tokens}")
    if prompt_length + params.max_tokens > spec.max_seq_len:
        raise invalid(
            "sampling_params.max_tokens",
            f"prompt ({prompt_length}) + max_tokens ({params.max_tokens}) exceeds the model's "
            f"{spec.max_seq_len}-token limit",
        )
    temperature = params.temperature if params.HasField("temperature") else 1.0
    if not (math.isfinite(temperature) and temperature >= 0):
        raise invalid("sampling_params.temperature", f"must be >= 0, got {temperature}")
    top_p = params.top_p if params.HasField("top_p") else 1.0
    if not 0 < top_p <= 1:
        raise invalid("sampling_params.top_p", f"must be in (0, 1], got {top_p}")
    for text in params.stop_strings:
        if not text:
            raise invalid("sampling_params.stop_strings", "an empty stop string")
    for token in params.stop_token_ids:
        if not 0 <= token < spec.vocab_size:
            raise invalid(
                "sampling_params.stop_token_ids",
                f"token id {token} is outside the vocabulary [0, {spec.vocab_size})",
            )
    return SamplingOptions(
        max_tokens=params.max_tokens,
        temperature=temperature,
        top_k=params.top_k,
        top_p=top_p,
        seed=params.seed if params.HasField("seed") else None,
        stop_strings=tuple(params.stop_strings),
        stop_token_ids=tuple(params.stop_token_ids),
    )


def sample_call(
    request: common_pb2.SampleRequest, tenant: str, spec: ModelSpec, max_num_samples: int
) -> SampleCall:
    """A validated sample request (INVALID_ARGUMENT naming the first bad field)."""
    path = weights_path(request.model_path, request.base_model, spec)
    if path is not None and not tenant:
        raise invalid("tenant", "required to read an adapter")
    prompt = prompt_tokens(request.prompt, spec)
    if not 0 < request.num_samples <= max_num_samples:
        raise invalid("num_samples", f"must be in 1..{max_num_samples}, got {request.num_samples}")
    options = sampling_options(request.sampling_params, len(prompt), spec)
    return SampleCall(path, prompt, request.num_samples, options, request.include_prompt_logprobs)


def logprobs_call(
    request: common_pb2.ComputeLogprobsRequest, tenant: str, spec: ModelSpec
) -> tuple[str | None, list[int]]:
    """The adapter path (None = base model) and tokens of a validated logprob request."""
    path = weights_path(request.model_path, request.base_model, spec)
    if path is not None and not tenant:
        raise invalid("tenant", "required to read an adapter")
    return path, prompt_tokens(request.prompt, spec)
