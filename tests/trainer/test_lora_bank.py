"""The bank's adapters are peft's adapters: same keys, same initial values under the same seed,
on every supported architecture, and a bank holding several adapters does not disturb them."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model, get_peft_model_state_dict

from treadle_models import load_model
from treadle_models.lora import LoraSpec, peft_lora_config
from treadle_trainer.lora_bank import LoraBank

MODELS = ("treadle/tiny-llama", "treadle/tiny-qwen2", "treadle/tiny-qwen3")
SPECS = (
    LoraSpec(rank=4),
    LoraSpec(rank=8, alpha=16.0, train_mlp=False),
    LoraSpec(rank=2, train_attn=False, train_unembed=False),
)


def _peft_weights(model: str, spec: LoraSpec, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    peft_model = get_peft_model(load_model(model), peft_lora_config(spec))
    state = get_peft_model_state_dict(peft_model)
    return {key: tensor for key, tensor in state.items() if ".lora_" in key}


@pytest.mark.parametrize("model", MODELS)
def test_initial_weights_equal_peft_under_the_same_seed(model):
    bank = LoraBank(load_model(model))
    bank.init_weights(LoraSpec(rank=16), seed=99)  # another adapter first changes nothing
    for seed, spec in enumerate(SPECS):
        ours = bank.init_weights(spec, seed)
        theirs = _peft_weights(model, spec, seed)
        assert set(ours) == set(theirs)
        assert all(torch.equal(ours[k].detach(), theirs[k]) for k in theirs), spec
        assert all(p.dtype == torch.float32 and p.requires_grad for p in ours.values())


def test_the_random_stream_outside_the_bank_is_untouched():
    bank = LoraBank(load_model(MODELS[0]))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    bank.init_weights(SPECS[0], seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_every_decoder_projection_is_grouped_and_the_unembedding_is_left_to_the_head():
    bank = LoraBank(load_model(MODELS[1]))
    names = [t.name for t in bank.targets]
    assert names.count("q_proj") == 2 and names.count("down_proj") == 2
    assert names[-1] == "lm_head" and bank.unembed_path == "lm_head"
    grouped = [m for m in bank.base.modules() if type(m).__name__ == "GroupedLoraLinear"]
    assert len(grouped) == len(bank.targets) - 1
