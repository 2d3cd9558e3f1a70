"""Checking and decoding an op's wire inputs into plain arrays and configs.

The checks are the contract's (treadle.contract), the ones the SDK and the scheduler run too,
plus what needs the model (vocabulary, length limit). Every refusal is a ValidationError (the
service answers it as INVALID_ARGUMENT) whose field names the offending input the way the request
spells it (`data[1].model_input`, `data[0].loss_fn_inputs.target_tokens`, `loss_fn_config.beta`,
`adam_params.beta2`, `lora_config.rank`), and it fails only the op it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from treadle import tensors
from treadle.contract import losses
from treadle.contract.optim import ADAM_DEFAULTS, check_adam
from treadle.contract.tokens import check_tokens
from treadle.errors import ValidationError, bad_field
from treadle.v1 import common_pb2
from treadle_models.lora import LoraSpec
from treadle_trainer.losses import RUNS
from treadle_trainer.optim import AdamConfig


@dataclass(frozen=True)
class DatumArrays:
    """One checked datum: tokens and per-token inputs, all of length T."""

    tokens: np.ndarray  # int64 [T]
    targets: np.ndarray  # int64 [T]
    weights: np.ndarray | None  # float32 [T]
    logprobs: np.ndarray | None  # float32 [T], the sampler's q
    advantages: np.ndarray | None  # float32 [T]
    clip_low: np.ndarray | None = None  # float32 [T], per-token clip_low_threshold
    clip_high: np.ndarray | None = None  # float32 [T], per-token clip_high_threshold
    ratio_mask: np.ndarray | None = None  # float32 [T], sequence_ratio_mask (gspo's M: != 0)


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
    request: common_pb2.ForwardBackwardRequest,
    vocab_size: int,
    max_seq_len: int,
    runs: tuple[str, ...] = RUNS,
) -> LossBatch:
    """Check a ForwardBackwardRequest against the loss contract (treadle.contract.losses, the
    losses in `runs`), the model's vocabulary and its length limit."""
    loss = losses.loss_for(request.loss_fn, request.forward_only, runs)
    config = losses.resolve_config(loss, request.loss_fn_config)
    if not request.data:
        raise bad_field("data", "at least one datum is required")
    datums = [
        _parse_datum(datum, f"data[{i}]", loss, config, vocab_size, max_seq_len)
        for i, datum in enumerate(request.data)
    ]
    return LossBatch(loss.name, config, request.forward_only, datums)


def _parse_datum(
    datum: common_pb2.Datum,
    field: str,
    loss: losses.Loss,
    config: dict[str, float],
    vocab_size: int,
    max_seq_len: int,
) -> DatumArrays:
    where = f"{field}.model_input"
    tokens = _model_tokens(datum.model_input, where)
    check_tokens(where, tokens, vocab_size, max_seq_len)
    losses.check_required_inputs(field, loss, datum.loss_fn_inputs)
    inputs: dict[str, np.ndarray] = {}
    for name in sorted(datum.loss_fn_inputs):  # a map's order is the sender's
        path = f"{field}.loss_fn_inputs.{name}"
        try:
            array = tensors.decode(datum.loss_fn_inputs[name], path)
        except ValueError as exc:
            raise bad_field(path, str(exc).removeprefix(f"{path}: ")) from None
        inputs[name] = losses.check_input(path, name, array, len(tokens))
    losses.check_thresholds(field, loss, config, inputs)
    check_tokens(
        f"{field}.loss_fn_inputs.{losses.TARGET_TOKENS}", inputs["target_tokens"], vocab_size
    )
    return DatumArrays(
        tokens=tokens,
        targets=inputs[losses.TARGET_TOKENS],
        weights=inputs.get(losses.WEIGHTS),
        logprobs=inputs.get(losses.LOGPROBS),
        advantages=inputs.get(losses.ADVANTAGES),
        clip_low=inputs.get(losses.CLIP_LOW),
        clip_high=inputs.get(losses.CLIP_HIGH),
        ratio_mask=inputs.get(losses.SEQUENCE_RATIO_MASK),
    )


def _model_tokens(model_input: common_pb2.ModelInput, field: str) -> np.ndarray:
    parts = []
    for j, chunk in enumerate(model_input.chunks):
        if chunk.WhichOneof("chunk") != "encoded_text":
            raise bad_field(f"{field}.chunks[{j}]", "only encoded_text chunks are accepted")
        parts.append(np.asarray(chunk.encoded_text.tokens, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def parse_adam(params: common_pb2.AdamParams) -> AdamConfig:
    """The step's AdamConfig, unset fields taking Tinker's defaults (treadle.contract.optim)."""
    given = {name: getattr(params, name) for name in ADAM_DEFAULTS if params.HasField(name)}
    return AdamConfig(**check_adam(given))


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
        raise ValidationError(str(exc), str(exc).split(":", 1)[0]) from None
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
