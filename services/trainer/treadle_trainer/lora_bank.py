"""One frozen base model whose adaptable Linears run grouped LoRA, and adapters' initial weights.

The bank replaces every Linear that a LoRA spec can target inside the decoder (q/k/v/o and
gate/up/down of each layer, as peft matches them: by the last name of the module path) with a
`GroupedLoraLinear` that reads the current pass's groups from one shared `Routing`. The
unembedding (`lm_head`) stays a plain Linear: `head.py` computes it chunk by chunk, together
with the loss gradient, from the weights the bank hands it.

Adapter weights are plain float32 tensors keyed as a saved PEFT adapter keys them
(`base_model.model.<module path>.lora_A.weight`), so checkpoints are PEFT adapters as they are.
`init_weights` consumes the random stream exactly as peft's `get_peft_model` does under the
same seed (for each target in module order: `nn.Linear(in, r)`, `nn.Linear(r, out)`, then
kaiming-uniform A and zero B), so a seed gives the adapter peft would give, whatever else the
bank holds. On a bfloat16 base the float32 weights are cast inside each pass (mixed precision).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from treadle_models.lora import ATTN_MODULES, MLP_MODULES, UNEMBED_MODULES, LoraSpec
from treadle_trainer.grouped_lora import Group, GroupedLoraLinear, Routing, stacked_supported

TARGET_NAMES = (*ATTN_MODULES, *MLP_MODULES, *UNEMBED_MODULES)


def adapter_key(path: str, part: str) -> str:
    """The PEFT state-dict key of one LoRA matrix (`part` is "A" or "B")."""
    return f"base_model.model.{path}.lora_{part}.weight"


@dataclass(frozen=True)
class LoraTarget:
    """A Linear of the base model that LoRA can adapt."""

    path: str  # module path in the base model, e.g. model.layers.0.self_attn.q_proj
    name: str  # its last component, what LoraSpec.target_modules() names
    in_features: int
    out_features: int


class LoraBank:
    """The base model, rewired for grouped LoRA, and the layout of each pass."""

    def __init__(self, base: PreTrainedModel) -> None:
        self.base = base
        self.routing = Routing()
        unembed = base.get_output_embeddings()
        assert isinstance(unembed, nn.Linear), "the base model needs a Linear unembedding"
        self.unembed = unembed
        self.targets: list[LoraTarget] = []
        for path, module in list(base.named_modules()):
            name = path.rsplit(".", 1)[-1]
            if name not in TARGET_NAMES or not isinstance(module, nn.Linear):
                continue
            self.targets.append(LoraTarget(path, name, module.in_features, module.out_features))
            if module is not unembed:
                parent_path, _, attr = path.rpartition(".")
                parent = base.get_submodule(parent_path)
                setattr(parent, attr, GroupedLoraLinear(module, path, self.routing))
        self.unembed_path = next(t.path for t in self.targets if t.name in UNEMBED_MODULES)
        self.decoder = base.get_decoder()
        self.device = unembed.weight.device
        self.dtype = unembed.weight.dtype
        self.stacked = self.device.type == "cuda" and stacked_supported(self.device, self.dtype)

    # adapters

    def init_weights(self, spec: LoraSpec, seed: int) -> dict[str, nn.Parameter]:
        """Fresh float32 LoRA matrices on the device, equal to peft's under `seed`."""
        wanted = set(spec.target_modules())
        weights: dict[str, nn.Parameter] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for target in self.targets:
                if target.name not in wanted:
                    continue
                lora_a = nn.Linear(target.in_features, spec.rank, bias=False)
                lora_b = nn.Linear(spec.rank, target.out_features, bias=False)
                nn.init.kaiming_uniform_(lora_a.weight, a=math.sqrt(5))
                nn.init.zeros_(lora_b.weight)
                for part, layer in (("A", lora_a), ("B", lora_b)):
                    tensor = layer.weight.detach().to(self.device)
                    weights[adapter_key(target.path, part)] = nn.Parameter(tensor)
        return weights

    def pass_weights(
        self, params: Mapping[str, torch.Tensor], trainable: bool
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """An adapter's float32 (A, B) per adapted module path, detached unless `trainable`.

        The grouped LoRA functions cast them to the compute dtype themselves and return
        float32 gradients, so a bfloat16 base trains float32 master weights.
        """
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for target in self.targets:
            key_a = adapter_key(target.path, "A")
            if key_a not in params:
                continue
            pair = (params[key_a], params[adapter_key(target.path, "B")])
            out[target.path] = pair if trainable else (pair[0].detach(), pair[1].detach())
        return out

    # passes

    @contextmanager
    def route(self, groups: Sequence[Group]) -> Iterator[None]:
        """Run the decoder with `groups` as the pass's LoRA layout."""
        self.routing.set(groups, self.stacked and len(groups) > 1, self.device)
        try:
            yield
        finally:
            self.routing.set([], False, self.device)

    def hidden(
        self, input_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor | None
    ) -> torch.Tensor:
        """The decoder's final hidden states [B, T, H] under the routed groups."""
        out = self.decoder(
            input_ids=input_ids_BT, attention_mask=attention_mask_BT, use_cache=False
        )
        return out.last_hidden_state
