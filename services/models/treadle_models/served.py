"""What a `--base-model` value means: the name a model is served under, and where it comes from.

A value is `SOURCE` or `NAME=SOURCE`. SOURCE says where the weights and the tokenizer come from
(a built-in model or a local Hugging Face folder, sources.py); NAME is what the model is called
everywhere else: capabilities, routing, checkpoints' base_model. Serving under another name exists
for clients that choose behaviour by the model's name, as tinker-cookbook picks its renderer and
tokenizer from it (`meta-llama/Llama-3.2-1B=treadle/tiny-llama` → the role_colon renderer).

A name that already means a model may not mean other weights: a built-in model's name serves only
that model, and in a list one entry's NAME may not be another entry's SOURCE unless both are the
same model. Checkpoints and clients that know a name would otherwise get weights they did not
train on.

This module imports nothing heavy: the launcher checks its list with it before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_LLAMA = "treadle/tiny-llama"
TINY_QWEN2 = "treadle/tiny-qwen2"
TINY_QWEN3 = "treadle/tiny-qwen3"
BUILT_IN = (TINY_LLAMA, TINY_QWEN2, TINY_QWEN3, SMOLLM2)  # sources.py builds these by name


@dataclass(frozen=True)
class ServedModel:
    """One served base model."""

    name: str  # what clients pass as base_model, and what checkpoints record
    source: str  # a built-in model or a local Hugging Face folder: weights and tokenizer

    def flag(self) -> str:
        """The `--base-model` value that means this model to a trainer, a sampler or prepare."""
        return self.source if self.name == self.source else f"{self.name}={self.source}"


def served_model(value: str, field: str = "base_model") -> ServedModel:
    """`value` ("SOURCE" or "NAME=SOURCE") as a ServedModel; ValueError naming `field`."""
    name, sep, source = value.partition("=")
    name, source = name.strip(), source.strip()
    if not sep:
        source = name
    if not name:
        raise ValueError(f"{field}: {value!r} has an empty name (expected NAME=SOURCE or SOURCE)")
    if not source:
        raise ValueError(f"{field}: {value!r} has an empty source (expected NAME=SOURCE)")
    if name in BUILT_IN and source != name:
        raise ValueError(
            f"{field}: {name!r} is a built-in model and cannot name {source!r}; "
            "serve it under another name"
        )
    return ServedModel(name, source)


def served_models(value: str, field: str = "base_model") -> list[ServedModel]:
    """A comma-separated list of served models; ValueError naming `field` for an empty list, a
    name served twice, or a name that is another entry's source but serves other weights."""
    models = [served_model(part, field) for part in value.split(",") if part.strip()]
    if not models:
        raise ValueError(f"{field}: at least one base model is required")
    names = [model.name for model in models]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"{field}: {name!r} is served twice")
    sources = {model.source for model in models}
    for model in models:
        if model.name in sources and model.source != model.name:
            raise ValueError(
                f"{field}: {model.name!r} is the source of another served model, so it cannot "
                f"also name {model.source!r}"
            )
    return models
