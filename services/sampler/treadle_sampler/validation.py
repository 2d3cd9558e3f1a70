"""Checks of sample and logprob requests, turning wire messages into engine arguments.

The limits are the contract's (treadle.contract.sampling and tokens, which the SDK checks too),
with the served model's vocabulary and context length. Every failure is INVALID_ARGUMENT with a
message that starts with the offending field's path (`prompt`, `num_samples`,
`sampling_params.top_p`, ...), raised before any work starts, so a bad request never reaches the
engine and never disturbs the requests running there.
"""

from __future__ import annotations

from dataclasses import dataclass

from treadle.contract import sampling
from treadle.contract.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from treadle.contract.tokens import check_tokens
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
    check_tokens("prompt", tokens, spec.vocab_size, spec.max_seq_len)
    return tokens


def sampling_options(
    params: common_pb2.SamplingParams, prompt_length: int, spec: ModelSpec
) -> SamplingOptions:
    """The engine's options for `params`, checked against the contract's limits
    (treadle.contract.sampling), the prompt and the model."""
    temperature = params.temperature if params.HasField("temperature") else DEFAULT_TEMPERATURE
    top_p = params.top_p if params.HasField("top_p") else DEFAULT_TOP_P
    sampling.check_params(params.max_tokens, temperature, top_p, params.stop_strings)
    sampling.check_length(prompt_length, params.max_tokens, spec.max_seq_len)
    check_tokens(
        "sampling_params.stop_token_ids", params.stop_token_ids, spec.vocab_size, allow_empty=True
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
    sampling.check_num_samples(request.num_samples, max_num_samples)
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
