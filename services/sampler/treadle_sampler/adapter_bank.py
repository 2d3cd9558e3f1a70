"""Many LoRA adapters in one PeftModel over a frozen base: load, delete, and mixed-batch forwards.

Row b of a forward uses adapter names[b] through peft's `adapter_names` (eval mode), `__base__`
meaning the base model alone. An adapter is loaded from a PEFT folder that `local_adapters.py`
wrote (LoRA tensors only, so loading can never touch the shared base weights). Until the first
adapter arrives, and after the last is deleted, forwards run on the plain model (peft's wrapper
needs an active adapter). Not thread-safe: one thread (the engine's worker) owns it.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel

BASE = "__base__"  # peft's adapter name for "no adapter" in a mixed batch


class AdapterBank:
    """The base model plus every loaded adapter, under names it chooses (valid identifiers)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self._peft: PeftModel | None = None
        self._names = itertools.count()

    def load(self, folder: Path) -> str:
        """Load the adapter in PEFT folder `folder`; its name. ValueError if it cannot be loaded."""
        name = f"a{next(self._names)}"
        try:
            peft = self._add(str(folder), name)
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
        """Logits of a batch whose row b uses adapter names[b] (BASE for none).

        A batch of one adapter runs peft's plain path with that adapter active: the mixed-batch
        path gathers and scatters rows in every adapted layer, which costs a single request
        about a third of its step time on a CPU.
        """
        peft = self._peft
        if peft is None or not peft.peft_config:
            return self.model(**inputs).logits
        if len(set(names)) > 1:
            return peft(**inputs, adapter_names=names).logits
        if names[0] == BASE:
            with peft.disable_adapter():
                return peft(**inputs).logits
        if peft.active_adapter != names[0]:
            peft.set_adapter(names[0])
        return peft(**inputs).logits
