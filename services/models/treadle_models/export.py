"""Exporting a trained adapter: the PEFT adapter as serving engines load it, or a merged model.

A sampler checkpoint already is a PEFT adapter (adapter_files.py). `serving_problems` checks the
layout every consumer relies on: peft's `PeftModel.from_pretrained`, vLLM's and SGLang's LoRA
loaders all read `adapter_config.json` (r, lora_alpha, target_modules) and tensors named
`base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`, with no adapter name in the key
and only the standard projection names (q/k/v/o_proj, gate/up/down_proj, lm_head) as targets.

`merge_adapter` folds the adapter into the base weights and writes a plain Hugging Face folder:

    W' = W + (alpha / r) · B @ A          (alpha / sqrt(r) with rslora)

computed in float32 whatever the export dtype, and cast only afterwards, so a bfloat16 export
rounds once instead of accumulating bf16 error in the sum. When the base model ties its output
projection to the input embeddings and the adapter trains `lm_head`, the two are untied first:
merging into the shared matrix would silently change the input embeddings too.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel

from treadle_models.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from treadle_models.devices import DTYPES
from treadle_models.lora import ATTN_MODULES, MLP_MODULES, UNEMBED_MODULES
from treadle_models.sources import load_model, load_tokenizer

SERVING_MODULES = frozenset((*ATTN_MODULES, *MLP_MODULES, *UNEMBED_MODULES))
_KEY = re.compile(
    r"^base_model\.model\.((?:[A-Za-z0-9_]+\.)*([A-Za-z0-9_]+))\.lora_([AB])\.weight$"
)


def _tensor_names(safetensors_bytes: bytes) -> list[str]:
    """Tensor names of a safetensors file, read from its JSON header (no tensors decoded)."""
    if len(safetensors_bytes) < 8:
        raise ValueError(f"{ADAPTER_WEIGHTS} is not a safetensors file")
    (length,) = struct.unpack("<Q", safetensors_bytes[:8])
    try:
        header = json.loads(safetensors_bytes[8 : 8 + length])
    except ValueError:
        raise ValueError(f"{ADAPTER_WEIGHTS} is not a safetensors file") from None
    return [name for name in header if name != "__metadata__"]


def serving_problems(files: Mapping[str, bytes]) -> list[str]:
    """Why peft, vLLM or SGLang would refuse this adapter (empty when they all accept it)."""
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if name not in files]
    if missing:
        return [f"{name} is missing" for name in missing]
    problems = []
    config = json.loads(files[ADAPTER_CONFIG])
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
    if not isinstance(config.get("r"), int) or config["r"] <= 0 or not config.get("lora_alpha"):
        problems.append("r and lora_alpha must be set")
    targets = set(config.get("target_modules") or ())
    if not targets or targets - SERVING_MODULES:
        problems.append(
            f"target_modules {sorted(targets)} are not all in {sorted(SERVING_MODULES)}"
        )
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            problems.append(f"{flag} is set")
    if config.get("bias", "none") != "none" or config.get("modules_to_save"):
        problems.append("bias or modules_to_save would add non-LoRA weights")
    pairs: dict[str, set[str]] = {}
    for name in _tensor_names(files[ADAPTER_WEIGHTS]):
        match = _KEY.match(name)
        if match is None:
            problems.append(
                f"tensor {name!r} is not named base_model.model.<module>.lora_A|B.weight"
            )
        elif match.group(2) not in targets:
            problems.append(f"tensor {name!r} adapts a module outside target_modules")
        else:
            pairs.setdefault(match.group(1), set()).add(match.group(3))
    problems += [
        f"module {m} lacks lora_A or lora_B" for m, ab in pairs.items() if ab != {"A", "B"}
    ]
    if not pairs:
        problems.append("no LoRA tensors")
    return problems


def merged_weights(model: PreTrainedModel, adapter_dir: Path) -> list[str]:
    """Add the adapter in `adapter_dir` into `model`'s float32 weights in place; returns the
    merged module names. Unties lm_head from the input embeddings first when both are one."""
    files = {name: (adapter_dir / name).read_bytes() for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)}
    problems = serving_problems(files)
    if problems:
        raise ValueError(f"{adapter_dir} is not a mergeable LoRA adapter: {'; '.join(problems)}")
    config = json.loads(files[ADAPTER_CONFIG])
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError("per-module rank_pattern / alpha_pattern adapters are not supported")
    rank = int(config["r"])
    scaling = float(config["lora_alpha"]) / (math.sqrt(rank) if config.get("use_rslora") else rank)
    tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    modules = dict(model.named_modules())
    if "lm_head" in config["target_modules"]:
        _untie_output_embeddings(model)
    merged = []
    for key in sorted(tensors):
        match = _KEY.match(key)
        assert match is not None  # serving_problems checked every name
        if match.group(3) != "A":
            continue
        name = match.group(1)
        layer = modules.get(name)
        if not isinstance(layer, torch.nn.Linear):
            raise ValueError(f"the base model has no linear layer {name!r} for tensor {key!r}")
        lora_a = tensors[key].to(torch.float32)
        lora_b = tensors[key[: -len("lora_A.weight")] + "lora_B.weight"].to(torch.float32)
        delta = (lora_b @ lora_a) * scaling
        if delta.shape != layer.weight.shape:
            raise ValueError(f"{name}: adapter shape {tuple(delta.shape)} != base weight shape")
        with torch.no_grad():
            layer.weight.add_(delta.to(layer.weight.device))
        merged.append(name)
    return merged


def _untie_output_embeddings(model: PreTrainedModel) -> None:
    output = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    if output is None or output.weight is not embeddings.weight:
        return
    output.weight = torch.nn.Parameter(embeddings.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):  # multimodal configs keep the flag there
        model.config.get_text_config().tie_word_embeddings = False


def merge_adapter(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    base_model: str | None = None,
    dtype: str = "float32",
) -> Path:
    """Write base model + adapter, merged, as a Hugging Face folder loadable by
    `AutoModelForCausalLM.from_pretrained(out_dir)`: config, safetensors weights in `dtype`, the
    tokenizer and its chat template. `base_model` defaults to the adapter's
    `base_model_name_or_path` (a built-in name or a local Hugging Face folder)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    adapter = Path(adapter_dir)
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    base_model = base_model or config.get("base_model_name_or_path")
    if not base_model:
        raise ValueError("base_model: the adapter does not name its base model; pass one")
    model = load_model(base_model, dtype=torch.float32)
    merged_weights(model, adapter)
    model.to(dtype=DTYPES[dtype])  # type: ignore[call-arg]  # transformers' @wraps hides self
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer = load_tokenizer(base_model)
    tokenizer.save_pretrained(out)
    return out
