"""treadle_models.export: a merged model behaves like base + adapter, in float32 and bfloat16,
with tied and untied output embeddings; adapters serving engines would refuse are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from transformers import AutoModelForCausalLM, AutoTokenizer

from treadle_models import load_model
from treadle_models.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_files
from treadle_models.export import merge_adapter, serving_problems
from treadle_models.lora import LoraSpec, peft_lora_config

IDS = torch.tensor([list(range(200, 240))])


def _adapter(base_model: str, spec: LoraSpec, folder: Path) -> Path:
    """A trained-looking adapter (random A and B) over `base_model`, as the trainer writes it."""
    torch.manual_seed(0)
    model = get_peft_model(load_model(base_model), peft_lora_config(spec))
    weights = {
        key.replace(".default", ""): torch.randn_like(param) * 0.05
        for key, param in model.named_parameters()
        if "lora_" in key
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in adapter_files(weights, spec, base_model).items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def llama_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _adapter("treadle/tiny-llama", LoraSpec(rank=4), tmp_path_factory.mktemp("llama"))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


@pytest.mark.parametrize(
    ("base_model", "spec"),
    [
        ("treadle/tiny-llama", LoraSpec(rank=8, alpha=16.0)),  # tied embeddings, lm_head adapted
        ("treadle/tiny-qwen2", LoraSpec(rank=4, train_mlp=False, train_unembed=False)),
    ],
)
def test_the_merged_model_matches_base_plus_adapter(
    base_model: str, spec: LoraSpec, tmp_path: Path
) -> None:
    adapter = _adapter(base_model, spec, tmp_path / "adapter")
    merged_dir = merge_adapter(adapter, tmp_path / "merged")
    want = _logits(PeftModel.from_pretrained(load_model(base_model), adapter))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert merged.dtype == torch.float32
    assert float((_logits(merged) - want).abs().max()) <= 1e-4
    base = load_model(base_model)
    assert torch.equal(merged.get_input_embeddings().weight, base.get_input_embeddings().weight)
    assert AutoTokenizer.from_pretrained(merged_dir).chat_template


def test_a_bfloat16_export_merges_in_float32_then_casts(
    llama_adapter: Path, tmp_path: Path
) -> None:
    adapter = llama_adapter
    full = AutoModelForCausalLM.from_pretrained(merge_adapter(adapter, tmp_path / "f32"))
    half_dir = merge_adapter(adapter, tmp_path / "bf16", dtype="bfloat16")
    half = AutoModelForCausalLM.from_pretrained(half_dir)
    assert json.loads((half_dir / "config.json").read_text())["dtype"] == "bfloat16"
    full_weights, half_weights = full.state_dict(), half.state_dict()
    assert all(half_weights[k].dtype == torch.bfloat16 for k in half_weights)
    # every bf16 weight is the float32 merge rounded once, not a sum of rounded terms
    assert all(
        torch.equal(half_weights[k], full_weights[k].to(torch.bfloat16)) for k in half_weights
    )


def test_adapters_serving_engines_refuse_are_named(llama_adapter: Path, tmp_path: Path) -> None:
    adapter = llama_adapter
    files = {name: (adapter / name).read_bytes() for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)}
    assert serving_problems(files) == []
    tensors = load_safetensors(files[ADAPTER_WEIGHTS])
    config = json.loads(files[ADAPTER_CONFIG])

    named = {k.replace("lora_A.weight", "lora_A.default.weight"): v for k, v in tensors.items()}
    only_a = {k: v for k, v in tensors.items() if "lora_B" not in k}
    cases = {
        "adapter name in keys": ({**files, ADAPTER_WEIGHTS: save_safetensors(named)}, "tensor"),
        "lora_B missing": ({**files, ADAPTER_WEIGHTS: save_safetensors(only_a)}, "lacks lora_A"),
        "dora": (
            {**files, ADAPTER_CONFIG: json.dumps({**config, "use_dora": True}).encode()},
            "use_dora",
        ),
        "odd target": (
            {**files, ADAPTER_CONFIG: json.dumps({**config, "target_modules": ["wq"]}).encode()},
            "target_modules",
        ),
        "no weights": ({ADAPTER_CONFIG: files[ADAPTER_CONFIG]}, ADAPTER_WEIGHTS),
    }
    for case, (broken, said) in cases.items():
        problems = serving_problems(broken)
        assert any(said in p for p in problems), (case, problems)

    dora = tmp_path / "dora"
    dora.mkdir()
    (dora / ADAPTER_WEIGHTS).write_bytes(files[ADAPTER_WEIGHTS])
    (dora / ADAPTER_CONFIG).write_bytes(cases["dora"][0][ADAPTER_CONFIG])
    with pytest.raises(ValueError, match="use_dora"):
        merge_adapter(dora, tmp_path / "never")
    assert not (tmp_path / "never").exists()
