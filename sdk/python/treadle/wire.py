"""Conversion between the SDK's types and the protobuf messages, with client-side checks.

Inputs are checked here, before any request is sent, with the checks the services run on what
arrives (treadle.contract): a datum whose loss inputs do not match its length, a wrong dtype, a
non-finite value, an unknown loss or config key raises ValidationError naming the field, as the
server would, without a round trip. What only the server knows (the model's vocabulary and
context length) is left to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from treadle import tensors
from treadle.contract import losses, sampling
from treadle.contract.optim import check_adam
from treadle.contract.tokens import check_tokens
from treadle.errors import bad_field
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


def model_input_to_proto(
    model_input: ModelInput, field: str = "model_input"
) -> common_pb2.ModelInput:
    """ModelInput as a message, its token ids checked as the services check them: all chunks
    together, as one input named `field` (treadle.contract.tokens)."""
    message = common_pb2.ModelInput()
    for chunk in model_input.chunks:
        message.chunks.add().encoded_text.tokens.extend(int(t) for t in chunk.tokens)
    check_tokens(field, [t for c in message.chunks for t in c.encoded_text.tokens])
    return message


def datums_to_proto(
    data: Sequence[Datum], loss_fn: str | None, config: Mapping[str, float] | None = None
) -> list[common_pb2.Datum]:
    """Datums as messages, each checked against the inputs of loss `loss_fn` (None: a forward's
    cross_entropy) and its `config` (None: its defaults) by the contract's rules
    (treadle.contract.losses)."""
    loss = losses.loss_for(loss_fn or "", forward_only=not loss_fn)
    if not data:
        raise bad_field("data", "at least one datum is required")
    messages = []
    for i, datum in enumerate(data):
        if not isinstance(datum, Datum):
            raise bad_field(f"data[{i}]", f"expected a Datum, got {type(datum).__name__}")
        length = datum.model_input.length
        message = common_pb2.Datum(
            model_input=model_input_to_proto(datum.model_input, f"data[{i}].model_input")
        )
        losses.check_required_inputs(f"data[{i}]", loss, datum.loss_fn_inputs)
        arrays: dict[str, np.ndarray] = {}
        for name in sorted(datum.loss_fn_inputs):  # in the order the services check them
            path = f"data[{i}].loss_fn_inputs.{name}"
            value = datum.loss_fn_inputs[name]
            arrays[name] = losses.check_input(path, name, value.to_numpy(), length)
            message.loss_fn_inputs[name].CopyFrom(tensors.encode(arrays[name]))
        losses.check_thresholds(f"data[{i}]", loss, config or {}, arrays)
        messages.append(message)
    return messages


def check_loss(
    loss_fn: str, config: dict[str, float] | None, forward_only: bool = False
) -> tuple[losses.Loss, dict[str, float]]:
    """The loss named `loss_fn` and its whole config (defaults filled in), checked as the
    scheduler and the trainer check them."""
    loss = losses.loss_for(loss_fn, forward_only)
    return loss, losses.resolve_config(loss, config)


def adam_to_proto(params: AdamParams) -> common_pb2.AdamParams:
    """AdamParams as a message (all fields set explicitly)."""
    return common_pb2.AdamParams(**check_adam(vars(params)))


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
    message = common_pb2.SamplingParams(
        max_tokens=max(params.max_tokens or 0, 0),
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
    sampling.check_params(
        params.max_tokens, params.temperature, params.top_p, list(message.stop_strings)
    )
    check_tokens("sampling_params.stop_token_ids", list(message.stop_token_ids), allow_empty=True)
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
