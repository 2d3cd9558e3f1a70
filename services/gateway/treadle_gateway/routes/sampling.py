"""Sampling: sampling clients (of a sampler checkpoint or a base model) and asample.

A sampling client is `{session}:sample:{n}`, bound to one immutable weights version, as in
Treadle's own SDK; `asample` goes on its session's stream as a Sample, and its future's result is
the SDK's SampleResponse. The submit answer carries one `sample_sequence_id` per sample (tinker
0.29 and later require them). A retried submission (same client, same seq_id) is the same future.
compute_logprobs is an asample of one token with prompt logprobs: those come back one per prompt
token, the first NaN (it has no prefix to be scored on).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request

from treadle.contract import sampling
from treadle.v1 import common_pb2, scheduler_pb2
from treadle_gateway import tinker_wire
from treadle_gateway.errors import bad_input
from treadle_gateway.futures import Result
from treadle_gateway.gateway import api_key, gateway_of
from treadle_gateway.middleware import JSON, PROTOBUF
from treadle_gateway.routes.training import (
    checkpoint_info,
    future_answer,
    submit,
    tinker_path,
)
from treadle_gateway.schemas import CreateSamplingSessionRequest, SampleRequest, SamplingParams
from treadle_gateway.sessions import SamplingTarget

router = APIRouter(prefix="/api/v1", tags=["sampling"])

CLONE_STRIDE = 1_000_000_000  # a cloned sampling client numbers its requests from clone * this


@router.post("/create_sampling_session")
async def create_sampling_session(
    body: CreateSamplingSessionRequest, request: Request
) -> dict[str, Any]:
    """A sampling client of a sampler checkpoint (the caller's) or of a base model."""
    gateway, key = gateway_of(request), api_key(request)
    session = await gateway.sessions.get(body.session_id, key)
    if body.model_path:
        info = await checkpoint_info(gateway, key, body.model_path)
        if info.kind != common_pb2.CHECKPOINT_KIND_SAMPLER:
            raise bad_input("model_path", f"{body.model_path} is a state checkpoint: sample "
                            "from sampler_weights")  # fmt: skip
        target = SamplingTarget(info.base_model, info.path)
    elif body.base_model:
        target = SamplingTarget(body.base_model)
    else:
        raise bad_input("base_model", "base_model or model_path is required")
    sampling_id = session.sampling_id(body.sampling_session_seq_id)
    session.sampling[sampling_id] = target
    return {"sampling_session_id": sampling_id, "type": "create_sampling_session"}


@router.get("/samplers/{sampling_session_id}")
async def get_sampler(sampling_session_id: str, request: Request) -> dict[str, Any]:
    """What a sampling client samples."""
    sessions = gateway_of(request).sessions
    _, target = await sessions.of_sampler(sampling_session_id, api_key(request))
    return {
        "sampler_id": sampling_session_id,
        "base_model": target.base_model,
        "model_path": tinker_path(target.model_path) if target.model_path else None,
    }


def _params(
    params: SamplingParams, prompt_length: int, max_seq_len: int
) -> common_pb2.SamplingParams:
    """Treadle's SamplingParams, checked by the contract (treadle.contract.sampling). A request
    without max_tokens may use the rest of the context, as the SDK's default allows."""
    max_tokens = params.max_tokens if params.max_tokens is not None else max_seq_len - prompt_length
    stop = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
    strings = [s for s in stop if isinstance(s, str)]
    token_ids = [int(t) for t in stop if not isinstance(t, str)]
    sampling.check_params(max_tokens, params.temperature, params.top_p, strings)
    message = common_pb2.SamplingParams(
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
        stop_strings=strings,
        stop_token_ids=token_ids,
    )
    if params.seed is not None:
        message.seed = params.seed
    return message


@router.post("/asample")
async def asample(body: SampleRequest, request: Request) -> dict[str, Any]:
    """Sample `num_samples` completions of the prompt."""
    gateway, key = gateway_of(request), api_key(request)
    session, target = await gateway.sessions.of_sampler(body.sampling_session_id, key)
    sequence_ids = [
        f"{body.sampling_session_id}:{body.seq_id}:{i}" for i in range(body.num_samples)
    ]
    retried = session.samples.get((body.sampling_session_id, body.seq_id))
    if retried is not None:
        return future_answer(
            gateway.futures.get(retried, session.owner), sample_sequence_ids=sequence_ids
        )
    if body.topk_prompt_logprobs or body.topk_sample_logprobs:
        raise bad_input("topk_prompt_logprobs", "top-k logprobs are not supported")
    sampling.check_num_samples(body.num_samples)
    prompt = tinker_wire.json_chunks(body.prompt, "prompt")
    length = sum(len(c.encoded_text.tokens) for c in prompt.chunks)
    max_seq_len = await gateway.max_seq_len(target.base_model, key)
    sample = common_pb2.SampleRequest(
        model_path=target.model_path,
        base_model=target.base_model,
        prompt=prompt,
        num_samples=body.num_samples,
        sampling_params=_params(body.sampling_params, length, max_seq_len),
        include_prompt_logprobs=body.prompt_logprobs,
    )
    wants_prompt_logprobs = body.prompt_logprobs

    def answer(result: scheduler_pb2.Result) -> Result:
        response = result.sample

        def render(proto: bool) -> tuple[bytes, str]:
            if proto:
                return tinker_wire.sample_proto(response, wants_prompt_logprobs), PROTOBUF
            return orjson.dumps(tinker_wire.sample_json(response, wants_prompt_logprobs)), JSON

        return Result(render=render)

    future = submit(gateway, session, "Sample", scheduler_pb2.Submit(sample=sample), answer)
    if gateway.config.session_polling:
        future.log = session.sample_log(body.sampling_session_id, body.seq_id // CLONE_STRIDE)
    session.remember_sample(body.sampling_session_id, body.seq_id, future.request_id)
    return future_answer(future, sample_sequence_ids=sequence_ids)
