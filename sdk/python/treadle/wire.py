"""Conversion between the SDK's types and the protobuf messages, with client-side checks.

Inputs are checked here, before any request is sent: a datum whose loss inputs do not match its
length, a wrong dtype, a non-finite value or an unknown loss name raises ValidationError naming
the field, exactly as the server would, without a round trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from treadle import tensors
from treadle.errors import ValidationError
from treadle.types import (
    AdamParams,
    Checkpoint,
    Datum,
    ForwardBackwardOutput,
    LoraConfig,
    ModelInput,
    SampledSequence,
    SampleResponse,
    SamplingParams,
    TensorData,
)
from treadle.v1 import common_pb2

LOSS_FNS = ("cross_entropy", "importance_sampling", "ppo", "cispo", "dro")
LOSS_INPUTS = {
    "cross_entropy": ("target_tokens",),
    "importance_sampling": ("target_tokens", "logprobs", "advantages"),
    "ppo": ("target_tokens", "logprobs", "advantages"),
    "cispo": ("target_tokens", "logprobs", "advantages"),
    "dro": ("target_tokens", "logprobs", "advantages"),
}
INT_INPUTS = ("target_tokens",)
LOSS_CONFIG_KEYS = ("clip_low_threshold", "clip_high_threshold", "beta")


def model_input_to_proto(
    model_input: ModelInput, field: str = "model_input"
) -> common_pb2.ModelInput:
    """ModelInput as a message; token ids must be non-negative integers."""
    message = common_pb2.ModelInput()
    for i, chunk in enumerate(model_input.chunks):
        tokens = [int(t) for t in chunk.tokens]
        if any(t < 0 for t in tokens):
            raise ValidationError(f"{field}.chunks[{i}]: token ids must be >= 0")
        message.chunks.add().encoded_text.tokens.extend(tokens)
    return message


def _check_tensor(name: str, data: TensorData, length: int) -> np.ndarray:
    array = data.to_numpy()
    if array.ndim != 1 or array.shape[0] != length:
        raise ValidationError(
            f"{name}: shape {list(array.shape)} does not match model_input length {length}"
        )
    wanted = "int64" if name.rsplit(".", 1)[-1] in INT_INPUTS else "float32"
    if data.dtype != wanted:
        raise ValidationError(f"{name}: dtype must be {wanted}, got {data.dtype}")
    if wanted == "float32" and not np.all(np.isfinite(array)):
        raise ValidationError(f"{name}: contains NaN or infinite values")
    return array


def datums_to_proto(data: Sequence[Datum], loss_fn: str | None) -> list[common_pb2.Datum]:
    """Datums as messages, checked against the loss's required inputs."""
    if not data:
        raise ValidationError("data: at least one datum is required")
    messages = []
    for i, datum in enumerate(data):
        if not isinstance(datum, Datum):
            raise ValidationError(f"data[{i}]: expected a Datum, got {type(datum).__name__}")
        length = datum.model_input.length
        if length == 0:
            raise ValidationError(f"data[{i}].model_input: is empty")
        message = common_pb2.Datum(
            model_input=model_input_to_proto(datum.model_input, f"data[{i}].model_input")
        )
        for name in LOSS_INPUTS.get(loss_fn or "", ("target_tokens",)):
            if name not in datum.loss_fn_inputs:
                raise ValidationError(f"data[{i}].loss_fn_inputs.{name}: is required by {loss_fn}")
        for name, value in datum.loss_fn_inputs.items():
            array = _check_tensor(f"data[{i}].loss_fn_inputs.{name}", value, length)
            message.loss_fn_inputs[name].CopyFrom(tensors.encode(array))
        messages.append(message)
    return messages


def check_loss(loss_fn: str, config: dict[str, float] | None) -> dict[str, float]:
    """Validate a loss name and its config; returns the config as floats."""
    if loss_fn not in LOSS_FNS:
        raise ValidationError(f"loss_fn: unknown loss {loss_fn!r}; one of {LOSS_FNS}")
    config = dict(config or {})
    for key, value in config.items():
        if key not in LOSS_CONFIG_KEYS:
            raise ValidationError(f"loss_fn_config.{key}: unknown key; one of {LOSS_CONFIG_KEYS}")
        if not math.isfinite(float(value)):
            raise ValidationError(f"loss_fn_config.{key}: must be finite")
    if loss_fn == "dro" and "beta" not in config:
        raise ValidationError("loss_fn_config.beta: dro requires beta")
    return {k: float(v) for k, v in config.items()}


def adam_to_proto(params: AdamParams) -> common_pb2.AdamParams:
    """AdamParams as a message (all fields set explicitly)."""
    values = vars(params)
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise ValidationError(f"adam_params.{name}: must be finite")
    if params.learning_rate < 0:
        raise ValidationError("adam_params.learning_rate: must be >= 0")
    return common_pb2.AdamParams(**{k: float(v) for k, v in values.items()})


def lora_to_proto(config: LoraConfig) -> common_pb2.LoraConfig:
    """LoraConfig as a message."""
    message = common_pb2.LoraConfig(
        rank=config.rank,
        train_attn=config.train_attn,
        train_mlp=config.train_mlp,
        train_unembed=config.train_unembed,
    )
    if config.alpha is not None:
        message.alpha = config.alpha
    return message


def sampling_params_to_proto(params: SamplingParams) -> common_pb2.SamplingParams:
    """SamplingParams as a message; `stop` as strings or token ids."""
    if params.max_tokens is None or params.max_tokens <= 0:
        raise ValidationError(f"sampling_params.max_tokens: must be > 0, got {params.max_tokens}")
    if params.temperature < 0:
        raise ValidationError("sampling_params.temperature: must be >= 0")
    if not 0 < params.top_p <= 1:
        raise ValidationError("sampling_params.top_p: must be in (0, 1]")
    message = common_pb2.SamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
    )
    if params.seed is not None:
        message.seed = int(params.seed)
    stop: Any = params.stop
    if isinstance(stop, str):
        message.stop_strings.append(stop)
    elif stop:
        for item in stop:
            if isinstance(item, str):
                message.stop_strings.append(item)
            else:
                message.stop_token_ids.append(int(item))
    return message


def _tensor_data(message: common_pb2.Tensor, name: str) -> TensorData:
    return TensorData.from_numpy(tensors.decode(message, name))


def forward_backward_from_proto(message: common_pb2.ForwardBackwardOutput) -> ForwardBackwardOutput:
    """ForwardBackwardOutput from its message."""
    return ForwardBackwardOutput(
        loss_fn_output_type=message.loss_fn_output_type,
        loss_fn_outputs=[
            {k: _tensor_data(v, k) for k, v in out.outputs.items()}
            for out in message.loss_fn_outputs
        ],
        metrics=dict(message.metrics),
    )


STOP_REASONS = {common_pb2.STOP_REASON_STOP: "stop", common_pb2.STOP_REASON_LENGTH: "length"}


def sample_from_proto(message: common_pb2.SampleResponse, prompt_logprobs: bool) -> SampleResponse:
    """SampleResponse from its message (prompt logprobs get their leading None)."""
    return SampleResponse(
        sequences=[
            SampledSequence(
                stop_reason=STOP_REASONS.get(s.stop_reason, "stop"),  # type: ignore[arg-type]
                tokens=list(s.tokens),
                logprobs=list(s.logprobs),
            )
            for s in message.sequences
        ],
        prompt_logprobs=[None, *message.prompt_logprobs] if prompt_logprobs else None,
        weights_version=message.weights_version,
    )


def checkpoint_from_proto(info: common_pb2.CheckpointInfo) -> Checkpoint:
    """Checkpoint metadata from its message."""
    return Checkpoint(
        checkpoint_id=info.name,
        checkpoint_type="sampler"
        if info.kind == common_pb2.CHECKPOINT_KIND_SAMPLER
        else "training",
        path=info.path,
        run_id=info.run_id,
        base_model=info.base_model,
        step=info.step,
        time=info.created_at,
        expires_at=info.expires_at if info.HasField("expires_at") else None,
        size_bytes=info.size_bytes,
        renderer_name=info.renderer_name,
    )
