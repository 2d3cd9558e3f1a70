"""Checking and decoding an op's wire inputs into plain arrays and configs.

Every refusal is an INVALID_ARGUMENT OpError whose field names the offending input the way the
request spells it (`data[1].model_input`, `data[0].loss_fn_inputs.target_tokens`,
`loss_fn_config.beta`, `adam_params.beta2`, `lora_config.rank`), and it fails only the op it
belongs to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
import numpy as np

from treadle import tensors
from treadle.v1 import common_pb2
from treadle_models.lora import LoraSpec
from treadle_runtime.errors import OpError, invalid
from treadle_trainer.losses import INPUT_NAMES, LOSSES, resolve_config
from treadle_trainer.optim import AdamConfig


@dataclass(frozen=True)
class DatumArrays:
    """One checked datum: tokens and per-token inputs, all of length T."""

    tokens: np.ndarray  # int64 [T]
    targets: np.ndarray  # int64 [T]
    weights: np.ndarray | None  # float32 [T]
    logprobs: np.ndarray | None  # float32 [T], the sampler's q
    advantages: np.ndarray | None  # float32 [T]


@dataclass(frozen=True)
class LossBatch:
    """One checked forward / forward_backward op."""

    loss_fn: str
    config: dict[str, float]
    forward_only: bool
    datums: list[DatumArrays]

    @property
    def tokens(self) -> int:
        """Tokens over all datums."""
        return sum(len(d.tokens) for d in self.datums)


def parse_forward_backward(
    request: common_pb2.ForwardBackwardRequest, vocab_size: int, max_seq_len: int
) -> LossBatch:
    """Check a ForwardBackwardRequest against the model's vocabulary and length limit."""
    loss_fn = request.loss_fn or ("cross_entropy" if request.forward_only else "")
    if loss_fn not in LOSSES:
        raise invalid("loss_fn", f"{request.loss_fn!r} is not one of {', '.join(LOSSES)}")
    config = resolve_config(loss_fn, dict(request.loss_fn_config))
    if not request.data:
        raise invalid("data", "must hold at least one datum")
    datums = [
        _parse_datum(datum, f"data[{i}]", loss_fn, vocab_size, max_seq_len)
        for i, datum in enumerate(request.data)
    ]
    return LossBatch(loss_fn, config, request.forward_only, datums)


def _parse_datum(
    datum: common_pb2.Datum, field: str, loss_fn: str, vocab_size: int, max_seq_len: int
) -> DatumArrays:
    tokens = _model_tokens(datum.model_input, f"{field}.model_input")
    where = f"{field}.model_input"
    if len(tokens) == 0:
        raise invalid(where, "has no tokens")
    if len(tokens) > max_seq_len:
        raise invalid(where, f"{len(tokens)} tokens exceed the model's limit of {max_seq_len}")
    _check_ids(tokens, vocab_size, where)
    inputs: dict[str, np.ndarray] = {}
    for name, tensor in datum.loss_fn_inputs.items():
        path = f"{field}.loss_fn_inputs.{name}"
        if name not in INPUT_NAMES:
            raise invalid(path, f"unknown input (accepted: {', '.join(INPUT_NAMES)})")
        try:
            array = tensors.decode(tensor, path)
        except ValueError as exc:
            raise OpError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), path) from None
        if array.shape != (len(tokens),):
            raise invalid(
                path,
                f"shape {list(array.shape)} does not match model_input length {len(tokens)}",
            )
        if name == "target_tokens":
            if array.dtype != np.int64:
                raise invalid(path, "must be DTYPE_INT64 token ids")
            _check_ids(array, vocab_size, path)
        else:
            array = array.astype(np.float32, copy=False)
            if not np.isfinite(array).all():
                position = int(np.flatnonzero(~np.isfinite(array))[0])
                raise invalid(path, f"non-finite value {array[position]} at position {position}")
        inputs[name] = array
    for name in LOSSES[loss_fn].inputs:
        if name not in inputs:
            raise invalid(f"{field}.loss_fn_inputs.{name}", f"is required by {loss_fn}")
    return DatumArrays(
        tokens=tokens,
        targets=inputs["target_tokens"],
        weights=inputs.get("weights"),
        logprobs=inputs.get("logprobs"),
        advantages=inputs.get("advantages"),
    )


def _model_tokens(model_input: common_pb2.ModelInput, field: str) -> np.ndarray:
    parts = []
    for j, chunk in enumerate(model_input.chunks):
        if chunk.WhichOneof("chunk") != "encoded_text":
            raise invalid(f"{field}.chunks[{j}]", "only encoded_text chunks are accepted")
        parts.append(np.asarray(chunk.encoded_text.tokens, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _check_ids(ids: np.ndarray, vocab_size: int, field: str) -> None:
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        position = int(bad[0])
        raise invalid(
            field,
            f"token id {int(ids[position])} at position {position} is outside [0, {vocab_size})",
        )


def parse_adam(params: common_pb2.AdamParams) -> AdamConfig:
    """The step's AdamConfig, unset fields taking Tinker's defaults."""
    defaults = AdamConfig()
    values = {
        name: float(getattr(params, name)) if params.HasField(name) else getattr(defaults, name)
        for name in (
            "learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm"
        )
    }  # fmt: skip
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise invalid(f"adam_params.{name}", f"must be finite and >= 0, got {value}")
    for name in ("beta1", "beta2"):
        if values[name] >= 1:
            raise invalid(f"adam_params.{name}", f"must be < 1, got {values[name]}")
    return AdamConfig(**values)


def parse_lora(config: common_pb2.LoraConfig) -> LoraSpec:
    """The LoraSpec of a wire LoraConfig (unset switches are true; unset alpha is the rank).

    alpha is always filled in, so two specs of the same adapter compare equal.
    """
    spec = LoraSpec(
        rank=config.rank,
        alpha=float(config.alpha) if config.HasField("alpha") else float(config.rank),
        train_attn=config.train_attn if config.HasField("train_attn") else True,
        train_mlp=config.train_mlp if config.HasField("train_mlp") else True,
        train_unembed=config.train_unembed if config.HasField("train_unembed") else True,
    )
    try:
        spec.validate()
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise OpError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), field) from None
    return spec


def lora_config(spec: LoraSpec) -> common_pb2.LoraConfig:
    """The wire LoraConfig of a LoraSpec."""
    return common_pb2.LoraConfig(
        rank=spec.rank,
        alpha=spec.effective_alpha,
        train_attn=spec.train_attn,
        train_mlp=spec.train_mlp,
        train_unembed=spec.train_unembed,
    )
