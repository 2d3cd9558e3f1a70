"""Base models by name: the tiny Llama, Qwen2 and Qwen3 configs build the same frozen weights in
every process, report what capabilities need (vocabulary, length limit, architecture, ranks),
load in float32 or bfloat16, and unknown names are refused with the names that exist. A model
served as NAME=SOURCE is called NAME and has SOURCE's weights and tokenizer. Two processes
converting SmolLM2 at once on an empty cache both get the same complete folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from treadle_models import UnknownModelError, load_model, load_tokenizer, model_spec
from treadle_models.cache import MARKER, is_complete
from treadle_models.lora import SUPPORTED_RANKS
from treadle_models.sources import SMOLLM2, prepare_model, tokenizer_folder

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


def test_a_model_served_under_another_name_has_its_sources_weights_and_tokenizer() -> None:
    renamed = "meta-llama/Llama-3.2-1B=treadle/tiny-llama"
    spec, source = model_spec(renamed), model_spec("treadle/tiny-llama")
    assert spec.name == "meta-llama/Llama-3.2-1B"
    assert (spec.vocab_size, spec.max_seq_len, spec.architecture, spec.tokenizer_id) == (
        source.vocab_size, source.max_seq_len, source.architecture, SMOLLM2,
    )  # fmt: skip
    model, original = load_model(renamed), load_model("treadle/tiny-llama")
    assert model.config.name_or_path == "meta-llama/Llama-3.2-1B"
    theirs = dict(original.named_parameters())
    assert all(torch.equal(p, theirs[k]) for k, p in model.named_parameters())
    assert tokenizer_folder(renamed) == tokenizer_folder(SMOLLM2)
    text = "Hello, world"
    assert load_tokenizer(renamed).encode(text) == load_tokenizer(SMOLLM2).encode(text)


def test_a_local_folder_serves_under_another_name(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    load_model("treadle/tiny-qwen2").save_pretrained(folder)
    spec = model_spec(f"org/renamed={folder}")
    assert (spec.name, spec.architecture, spec.tokenizer_id) == (
        "org/renamed", "Qwen2ForCausalLM", str(folder),
    )  # fmt: skip
    prepare_model(f"org/renamed={folder}")  # nothing to build: no error


def test_an_unknown_source_under_another_name_is_refused_naming_the_source() -> None:
    with pytest.raises(UnknownModelError, match=r"^base_model 'nobody/none' is not served here"):
        model_spec("meta-llama/Llama-3.2-1B=nobody/none")
    with pytest.raises(ValueError, match=r"^base_model: 'treadle/tiny-llama' is a built-in"):
        load_model("treadle/tiny-llama=treadle/tiny-qwen3")


# waits on stdin once torch is imported, so that both processes reach the cache together
_CONVERT = (
    "import sys; from treadle_models.sources import smollm2_dir; print('ready', flush=True); "
    "sys.stdin.readline(); print(smollm2_dir(), flush=True)"
)


@pytest.mark.mesh  # two conversion processes: about a minute
def test_two_processes_converting_at_once_share_one_complete_folder(tmp_path: Path) -> None:
    env = {**os.environ, "TREADLE_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    converters = [
        subprocess.Popen([sys.executable, "-c", _CONVERT], text=True, env=env, **pipes)
        for _ in range(2)
    ]
    for converter in converters:
        assert converter.stdout is not None and converter.stdout.readline() == "ready\n"
    for converter in converters:
        assert converter.stdin is not None
        converter.stdin.write("go\n")
        converter.stdin.flush()
    outputs = [converter.communicate(timeout=240) for converter in converters]
    for converter, (_, err) in zip(converters, outputs, strict=True):
        assert converter.returncode == 0, err[-3000:]
    folders = {Path(out.strip()) for out, _ in outputs}
    assert folders == {tmp_path / "models" / "SmolLM2-135M-Instruct"}
    folder = folders.pop()
    assert is_complete(folder) and (folder / MARKER).exists()
    assert sum("de-quantizing" in err for _, err in outputs) == 1, "converted more than once"
    assert AutoConfig.from_pretrained(folder, local_files_only=True).vocab_size == 49152
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer.decode(tokenizer.encode("12 + 7 =")) == "12 + 7 ="
    assert not [p.name for p in folder.parent.iterdir() if ".tmp" in p.name]
