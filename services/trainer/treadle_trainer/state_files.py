"""The files of a state checkpoint, and reading them back.

A state checkpoint is a PEFT adapter (`adapter_model.safetensors`, `adapter_config.json`; the
same two files a sampler checkpoint holds, so a state checkpoint is also loadable by peft) plus
`optimizer.safetensors` (Adam moments keyed `{peft key}.exp_avg` / `.exp_avg_sq`, float32 as
trained) and `trainer_state.json` (step, seed, LoRA spec, base model). safetensors keeps raw
bytes, so export then import continues training bit-identically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from treadle_models.adapter_files import adapter_files, read_adapter_weights
from treadle_models.lora import LoraSpec

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainerState:
    """What a state checkpoint records besides tensors."""

    step: int
    seed: int
    spec: LoraSpec
    base_model: str


@dataclass(frozen=True)
class StateContents:
    """A decoded state checkpoint."""

    state: TrainerState
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor] | None  # None when the checkpoint holds none


def encode_state(
    state: TrainerState,
    weights: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, torch.Tensor],
) -> dict[str, bytes]:
    """The files of a state checkpoint."""
    files = adapter_files(weights, state.spec, state.base_model)
    moments = {key: t.detach().to("cpu").contiguous() for key, t in optimizer.items()}
    files[OPTIMIZER_FILE] = save_safetensors(moments, metadata={"step": str(state.step)})
    record = {
        "format": FORMAT_VERSION,
        "step": state.step,
        "seed": state.seed,
        "base_model": state.base_model,
        "lora": asdict(state.spec),
    }
    files[STATE_FILE] = json.dumps(record, indent=2, sort_keys=True).encode()
    return files


def decode_state(files: Mapping[str, bytes]) -> StateContents:
    """Read a state checkpoint's files; ValueError saying what is missing or malformed."""
    if STATE_FILE not in files:
        raise ValueError(f"{STATE_FILE} is missing (not a state checkpoint)")
    try:
        record = json.loads(files[STATE_FILE])
        state = TrainerState(
            step=int(record["step"]),
            seed=int(record["seed"]),
            spec=LoraSpec(**record["lora"]),
            base_model=str(record["base_model"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{STATE_FILE} is malformed: {exc}") from None
    weights = read_adapter_weights(files)
    optimizer = None
    if OPTIMIZER_FILE in files:
        try:
            optimizer = load_safetensors(files[OPTIMIZER_FILE])
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{OPTIMIZER_FILE} is not a safetensors file: {exc}") from None
    return StateContents(state, weights, optimizer)
