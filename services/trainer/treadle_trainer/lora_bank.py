"""Many named LoRA adapters over one frozen base model, run together in mixed batches.

The bank is one PEFT model; each training model's adapter is a peft adapter named `a0`, `a1`, …
(peft needs python identifiers; names are never reused). A batch mixes adapters row by row
through peft's `adapter_names=[...]` forward, which peft allows only in eval mode, so the model
stays in eval mode (no dropout anywhere, LoRA dropout is 0) and every adapter's LoRA matrices
keep requires_grad: backward through a mixed batch gives each adapter exactly its rows' gradient.
peft marks only its "active" adapter trainable whenever adapters come and go, so the bank
re-asserts requires_grad after every change and keeps some existing adapter active.

An adapter is initialised under `torch.manual_seed(seed)` inside a forked RNG, so it equals
`get_peft_model(base, config)` under the same seed, whatever else the bank holds.
"""

from __future__ import annotations

import itertools
import re
import warnings

import torch
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel

from treadle_models.lora import LoraSpec, peft_lora_config

_TIED_WARNING = ".*tie_word_embeddings.*"


class LoraBank:
    """A PEFT model over `base` holding any number of named LoRA adapters."""

    def __init__(self, base: PreTrainedModel) -> None:
        self.base = base
        self.model: PeftModel | None = None
        self._names = (f"a{n}" for n in itertools.count())
        self._params: dict[str, dict[str, torch.nn.Parameter]] = {}

    def add(self, spec: LoraSpec, seed: int) -> str:
        """Add an adapter initialised from `seed`; returns its peft name."""
        name = next(self._names)
        config = peft_lora_config(spec)
        devices = [self.base.device] if self.base.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TIED_WARNING)
            torch.manual_seed(seed)
            if self.model is None:
                self.model = get_peft_model(self.base, config, adapter_name=name)
            else:
                self.model.add_adapter(name, config)
        self.model.eval()
        self._params[name] = self._collect(name)
        self._refresh()
        return name

    def remove(self, name: str) -> None:
        """Delete an adapter and its matrices."""
        assert self.model is not None
        del self._params[name]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Adapter .* was active")
            self.model.delete_adapter(name)
        self._refresh()

    def parameters(self, name: str) -> dict[str, torch.nn.Parameter]:
        """The adapter's matrices, keyed as in a saved PEFT adapter (no adapter name)."""
        return self._params[name]

    def logits(
        self, input_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, names_B: list[str]
    ) -> torch.Tensor:
        """Logits [B, T, V] where row b runs through adapter `names_B[b]`."""
        assert self.model is not None
        out = self.model(
            input_ids=input_ids_BT,
            attention_mask=attention_mask_BT,
            adapter_names=names_B,
            use_cache=False,
        )
        return out.logits

    def _collect(self, name: str) -> dict[str, torch.nn.Parameter]:
        assert self.model is not None
        pattern = re.compile(rf"\.{re.escape(name)}(?=\.)")
        return {
            pattern.sub("", key, count=1): param
            for key, param in self.model.named_parameters()
            if ".lora_" in key and f".{name}." in key
        }

    def _refresh(self) -> None:
        assert self.model is not None
        names = list(self._params)
        if names and self.model.active_adapter not in names:
            self.model.set_adapter(names[0])
        for params in self._params.values():
            for param in params.values():
                param.requires_grad_(True)
