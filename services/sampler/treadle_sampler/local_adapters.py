"""Adapters on local disk: the PEFT folders that engines load by path.

Every adapter the sampler serves is first written here as a PEFT folder (`adapter_config.json`
+ `adapter_model.safetensors`), one folder per engine key, and the engine loads it from that
path: the torch engine through peft, SGLang through /load_lora_adapter (so the folder must be
on a filesystem the SGLang server reads). A folder lives exactly as long as its adapter is loaded
in the engine; eviction removes both.

Key decision: the files are checked and reduced to their LoRA tensors before they touch the disk.
peft's `save_embedding_layers` puts a copy of the (tied) base embedding into a saved adapter, and
loading that would overwrite the base model every adapter shares; `modules_to_save` would do the
same. A folder appears atomically (written beside its final name, then renamed), so an engine
never reads half an adapter.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
LORA_KEY_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude")


def lora_parts(files: Mapping[str, bytes]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An adapter's config and LoRA tensors; ValueError if the files are not a LoRA adapter."""
    missing = {CONFIG, WEIGHTS} - set(files)
    if missing:
        raise ValueError(f"not a PEFT adapter: {', '.join(sorted(missing))} missing")
    try:
        config = json.loads(files[CONFIG])
    except ValueError as exc:
        raise ValueError(f"not a PEFT adapter: {CONFIG}: {exc}") from None
    try:
        tensors = load_safetensors(files[WEIGHTS])
    except Exception as exc:  # safetensors raises its own error type
        raise ValueError(f"not a PEFT adapter: {WEIGHTS}: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ValueError(f"not a PEFT adapter: {CONFIG} is not a LoRA config")
    if config.get("modules_to_save"):
        raise ValueError("adapters with modules_to_save are not served (LoRA weights only)")
    lora = {k: v for k, v in tensors.items() if any(part in k for part in LORA_KEY_PARTS)}
    if not lora:
        raise ValueError(f"not a PEFT adapter: {WEIGHTS} holds no LoRA weights")
    return config, lora


def write_peft_folder(files: Mapping[str, bytes], folder: Path) -> Path:
    """Write the LoRA part of adapter `files` as a PEFT folder at `folder` (atomically)."""
    config, tensors = lora_parts(files)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / CONFIG).write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial / WEIGHTS))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


class AdapterFolders:
    """One PEFT folder per engine key, under a fresh folder of this process inside `parent`.

    `parent` defaults to the system's temporary folder; with SGLang on another host it must be a
    shared filesystem mounted at the same path there.
    """

    def __init__(self, parent: str | Path = "") -> None:
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="treadle-adapters-", dir=parent or None))

    def write(self, key: str, files: Mapping[str, bytes]) -> Path:
        """The folder of adapter `key`, written from its files; ValueError if they are no LoRA."""
        return write_peft_folder(files, self.root / key)

    def remove(self, key: str) -> None:
        """Delete the folder of adapter `key` (if any)."""
        shutil.rmtree(self.root / key, ignore_errors=True)

    def keys(self) -> list[str]:
        """Keys whose folders exist."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and "." not in p.name)

    def close(self) -> None:
        """Delete this process's folder and every adapter in it."""
        shutil.rmtree(self.root, ignore_errors=True)
