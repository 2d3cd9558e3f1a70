"""Base models by name: the tiny Llama, Qwen2 and Qwen3 configs build the same frozen weights in
every process, report what capabilities need (vocabulary, length limit, architecture, ranks),
load in float32 or bfloat16, and unknown names are refused with the names that exist."""

from __future__ import annotations

import pytest
import torch

from treadle_models import UnknownModelError, load_model, model_spec
from treadle_models.lora import SUPPORTED_RANKS

FAMILIES = {
    "treadle/tiny-llama": "LlamaForCausalLM",
    "treadle/tiny-qwen2": "Qwen2ForCausalLM",
    "treadle/tiny-qwen3": "Qwen3ForCausalLM",
}


@pytest.mark.parametrize(("name", "architecture"), FAMILIES.items())
def test_tiny_models_are_frozen_deterministic_and_described(name, architecture):
    spec = model_spec(name)
    assert (spec.vocab_size, spec.max_seq_len, spec.architecture) == (49152, 2048, architecture)
    assert spec.supported_ranks == SUPPORTED_RANKS and 32 in spec.supported_ranks
    first, second = load_model(name), load_model(name)
    assert type(first).__name__ == architecture and not first.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in first.parameters())
    theirs = dict(second.named_parameters())
    assert all(torch.equal(p, theirs[k]) for k, p in first.named_parameters())


def test_a_model_loads_in_bfloat16_for_the_gpu_setting():
    model = load_model("treadle/tiny-qwen3", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 49152) and torch.isfinite(logits.float()).all()


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(UnknownModelError, match="treadle/tiny-qwen3"):
        model_spec("nobody/no-such-model")
