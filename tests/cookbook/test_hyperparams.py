"""The LoRA learning-rate formula: 5e-5 · 10 · (2000 / hidden_size) ^ P_family."""

from __future__ import annotations

import pytest

from treadle_cookbook.hyperparams import get_hidden_size, get_lr, model_family


def test_lr_follows_the_family_formula() -> None:
    assert get_lr("meta-llama/Llama-3.1-8B") == pytest.approx(5e-4 * (2000 / 4096) ** 0.781)
    assert get_lr("meta-llama/Llama-3.1-8B") == pytest.approx(2.856e-4, rel=1e-3)
    assert get_lr("Qwen/Qwen3-8B") == pytest.approx(5e-4 * (2000 / 4096) ** 0.0775)
    smol = get_lr("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert smol == pytest.approx(5e-4 * (2000 / 576) ** 0.781) and 1e-3 < smol < 2e-3


def test_smaller_models_and_lora_get_larger_rates() -> None:
    assert get_lr("meta-llama/Llama-3.2-1B") > get_lr("meta-llama/Llama-3.1-70B")
    full = get_lr("Qwen/Qwen3-4B", is_lora=False)
    assert get_lr("Qwen/Qwen3-4B") == pytest.approx(10 * full)
    # the Qwen exponent is small: the rate hardly moves with size
    assert get_lr("Qwen/Qwen3-0.6B") / get_lr("Qwen/Qwen3-32B") < 1.2


def test_families_hidden_sizes_and_overrides() -> None:
    assert model_family("HuggingFaceTB/SmolLM2-360M") == "llama"
    assert model_family("treadle/tiny-qwen2") == "qwen"
    assert get_hidden_size("treadle/tiny-llama") == 128
    assert get_lr("my-org/custom-llama", hidden_size=2000) == pytest.approx(5e-4)
    assert get_lr("my-org/model", hidden_size=2000, family="qwen") == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="model_name: no learning-rate formula"):
        get_lr("mistralai/Mistral-7B")
    with pytest.raises(ValueError, match="hidden size of 'my-org/llama-x' unknown"):
        get_lr("my-org/llama-x")
