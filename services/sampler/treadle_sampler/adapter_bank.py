"""Many LoRA adapters in one PeftModel over a frozen base: load, delete, and mixed-batch forwards.

Row b of a forward uses adapter names[b] through peft's `adapter_names` (eval mode), `__base__`
meaning the base model alone. An adapter is loaded from its PEFT files keeping only its LoRA
tensors: peft's `save_embedding_layers` puts a copy of the (tied) base embedding into a saved
adapter, and loading that would write it into the base model every adapter shares. Until the
first adapter arrives, and after the last is deleted, forwards run on the plain model (peft's
wrapper needs an active adapter). Not thread-safe: one thread (the engine's worker) owns it.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from transformers import PreTrainedModel

BASE = "__base__"  # peft's adapter name for "no adapter" in a mixed batch
LORA_KEY_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude")


class AdapterBank:
    """The base model plus every loaded adapter, under names it chooses (valid identifiers)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self._peft: PeftModel | None = None
        self._names = itertools.count()

    def load(self, files: Mapping[str, bytes]) -> str:
        """Load an adapter from its PEFT files; its name. ValueError if it cannot be loaded."""
        config, tensors = lora_parts(files)
        name = f"a{next(self._names)}"
        with tempfile.TemporaryDirectory(prefix="treadle-adapter-") as folder:
            (Path(folder) / "adapter_config.json").write_text(json.dumps(config))
            save_file(tensors, str(Path(folder) / "adapter_model.safetensors"))
            try:
                peft = self._add(folder, name)
            except Exception as exc:
                self.delete(name)
                raise ValueError(f"not an adapter of this base model: {exc}") from None
        peft.eval()
        if peft.active_adapter not in peft.peft_config:
            peft.set_adapter(name)
        for param in peft.parameters():
            param.requires_grad_(False)
        return name

    def _add(self, folder: str, name: str) -> PeftModel:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's notes on tied embeddings
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
            else:
                self._peft.load_adapter(folder, adapter_name=name)
        return self._peft

    def delete(self, name: str) -> None:
        """Remove adapter `name` from the model."""
        if self._peft is None or name not in self._peft.peft_config:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "adapter was active, setting another"
            self._peft.delete_adapter(name)

    def forward(self, names: list[str], **inputs: Any) -> torch.Tensor:
        """Logits of a batch whose row b uses adapter names[b] (BASE for none)."""
        if self._peft is not None and self._peft.peft_config:
            return self._peft(**inputs, adapter_names=names).logits
        return self.model(**inputs).logits


def lora_parts(files: Mapping[str, bytes]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An adapter's config and LoRA tensors; ValueError if the files are not a LoRA adapter."""
    missing = {"adapter_config.json", "adapter_model.safetensors"} - set(files)
    if missing:
        raise ValueError(f"not a PEFT adapter: {', '.join(sorted(missing))} missing")
    try:
        config = json.loads(files["adapter_config.json"])
    except ValueError as exc:
        raise ValueError(f"not a PEFT adapter: adapter_config.json: {exc}") from None
    try:
        tensors = load_safetensors(files["adapter_model.safetensors"])
    except Exception as exc:  # safetensors raises its own error type
        raise ValueError(f"not a PEFT adapter: adapter_model.safetensors: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ValueError("not a PEFT adapter: adapter_config.json is not a LoRA config")
    if config.get("modules_to_save"):
        raise ValueError("adapters with modules_to_save are not served (LoRA weights only)")
    lora = {k: v for k, v in tensors.items() if any(part in k for part in LORA_KEY_PARTS)}
    if not lora:
        raise ValueError("not a PEFT adapter: adapter_model.safetensors holds no LoRA weights")
    return config, lora
