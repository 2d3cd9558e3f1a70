"""An adapter's PEFT files as bytes: what the trainer writes and the sampler (or peft, vLLM,
SGLang) reads.

A sampler checkpoint is exactly the two files `PeftModel.from_pretrained(dir)` expects:
`adapter_config.json` (written by peft's own `LoraConfig.save_pretrained`, so its format follows
the installed peft) and `adapter_model.safetensors` holding only the LoRA matrices, keyed as
`get_peft_model_state_dict` keys them (`base_model.model.<module>.lora_A.weight`, no adapter
name). Base weights are never included, even when the unembedding is adapted: every reader has
the same base model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from treadle_models.lora import LoraSpec, peft_lora_config

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def adapter_config_json(spec: LoraSpec, base_model: str) -> bytes:
    """The `adapter_config.json` of an adapter with `spec` over `base_model`."""
    config = peft_lora_config(spec)
    config.base_model_name_or_path = base_model
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        return (Path(folder) / ADAPTER_CONFIG).read_bytes()


def adapter_files(
    weights: Mapping[str, torch.Tensor], spec: LoraSpec, base_model: str
) -> dict[str, bytes]:
    """The PEFT adapter files of LoRA `weights` (peft state-dict keys, without adapter name)."""
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in weights.items()}
    return {
        ADAPTER_WEIGHTS: save_safetensors(tensors, metadata={"format": "pt"}),
        ADAPTER_CONFIG: adapter_config_json(spec, base_model),
    }


def read_adapter_weights(files: Mapping[str, bytes]) -> dict[str, torch.Tensor]:
    """The LoRA tensors of an adapter's files; ValueError if they are missing or unreadable."""
    if ADAPTER_WEIGHTS not in files:
        raise ValueError(f"{ADAPTER_WEIGHTS} is missing")
    try:
        return load_safetensors(files[ADAPTER_WEIGHTS])
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{ADAPTER_WEIGHTS} is not a safetensors file: {exc}") from None


def lora_spec_from_config(files: Mapping[str, bytes]) -> LoraSpec:
    """The LoraSpec recorded in an adapter's `adapter_config.json`."""
    if ADAPTER_CONFIG not in files:
        raise ValueError(f"{ADAPTER_CONFIG} is missing")
    config = json.loads(files[ADAPTER_CONFIG])
    modules = set(config.get("target_modules") or ())
    return LoraSpec(
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        train_attn="q_proj" in modules,
        train_mlp="gate_proj" in modules,
        train_unembed="lm_head" in modules,
    )


def write_adapter_dir(files: Mapping[str, bytes], folder: str | Path) -> Path:
    """Write adapter files into `folder` (created if needed) for `load_adapter(folder)`."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"unsafe adapter file name {name!r}")
        (path / name).write_bytes(data)
    return path
