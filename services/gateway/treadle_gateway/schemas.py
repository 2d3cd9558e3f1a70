"""The JSON bodies of the tinker SDK's requests, as the routes read them (and the OpenAPI schema
publishes them).

Each model lists the fields the gateway uses, typed, with the SDK's defaults; fields an SDK
version sends and the gateway does not use are accepted and ignored (`extra="ignore"`), since
every generation adds some. A field of the wrong type is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    """A request body: unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")


class ClientConfigRequest(Body):
    sdk_version: str = ""


class CreateSessionRequest(Body):
    tags: list[str] = Field(default_factory=list)
    user_metadata: dict[str, Any] = Field(default_factory=dict)
    sdk_version: str = ""


class SessionRef(Body):
    session_id: str


class FinishReason(Body):
    type: str = "success"


class FinishRequest(Body):
    reason: FinishReason = Field(default_factory=FinishReason)
    detail: str | None = None


class LoraConfig(Body):
    rank: int = Field(default=32, gt=0)
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class CreateModelRequest(Body):
    session_id: str
    model_seq_id: int = Field(ge=0)
    base_model: str
    lora_config: LoraConfig = Field(default_factory=lambda: LoraConfig(rank=32))
    user_metadata: dict[str, Any] | None = None


class ModelRef(Body):
    model_id: str


class AdamParams(Body):
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class OptimStepRequest(Body):
    model_id: str
    seq_id: int = Field(ge=1)
    adam_params: AdamParams | None = None
    optimizer_params: dict[str, Any] | None = None


class SaveWeightsRequest(Body):
    model_id: str
    seq_id: int = Field(ge=1)
    path: str | None = None  # the checkpoint's name
    ttl_seconds: int | None = None
    overwrite: bool = False
    user_metadata: dict[str, Any] | None = None


class SaveWeightsForSamplerRequest(SaveWeightsRequest):
    sampling_session_seq_id: int | None = None  # unnamed: a sampling client of the new weights
    kind: str = "snapshot"


class LoadWeightsRequest(Body):
    path: str
    optimizer: bool = False
    model_id: str | None = None  # an existing model's load_state...
    seq_id: int | None = None
    session_id: str | None = None  # ...or a new model of the session, from the checkpoint
    model_seq_id: int | None = None


class WeightsInfoRequest(Body):
    tinker_path: str


class CreateSamplingSessionRequest(Body):
    session_id: str
    sampling_session_seq_id: int = Field(ge=0)
    base_model: str | None = None
    model_path: str | None = None


class SamplingParams(Body):
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


class SampleRequest(Body):
    sampling_session_id: str
    seq_id: int = Field(ge=0)
    num_samples: int = 1
    prompt: dict[str, Any]
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0


class RetrieveFutureRequest(Body):
    request_id: str
    allow_metadata_only: bool = False


class PollTarget(Body):
    type: str = "sampling_session"
    sampling_session_id: str
    cloned_sampler_id: int = 0


class RetrieveFuturesRequest(Body):
    target: PollTarget
    prev_cursor: int = 0
    retrieved_request_ids: list[str] = Field(default_factory=list)
    timeout: float | None = None


class RequestRef(Body):
    request_id: str


class TtlRequest(Body):
    ttl_seconds: int | None = None
