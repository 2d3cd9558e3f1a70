"""Renderers against Hugging Face's apply_chat_template, token for token, on the real SmolLM2
tokenizer and on the Qwen2.5, Qwen3 and Llama 3 templates; loss weights; stop sequences; parsing
sampled tokens; errors that name the offending message."""

from __future__ import annotations

from typing import Any

import pytest

from treadle_cookbook.renderers import (
    RenderError,
    TrainOnWhat,
    datum_from_tokens_weights,
    get_renderer,
)

SINGLE = [
    {"role": "user", "content": "What is 17 + 25?"},
    {"role": "assistant", "content": "17 + 25 = 42."},
]
WITH_SYSTEM = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "Name a primary colour."},
    {"role": "assistant", "content": "Red is a primary colour."},
]
MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": " Hello! How can I help?\n"},
    {"role": "user", "content": "Reverse 'abc'.\n"},
    {"role": "assistant", "content": "<think>\nReverse the letters.\n</think>\n\ncba"},
]
CONVERSATIONS = {"single": SINGLE, "with_system": WITH_SYSTEM, "multi_turn": MULTI_TURN}

# (tokenizer family, renderer name, apply_chat_template keyword arguments)
FORMATS = [
    ("smollm2", "chatml", {}),
    ("qwen2_5", "chatml", {}),
    ("qwen3", "qwen3", {}),
    ("qwen3", "qwen3_disable_thinking", {"enable_thinking": False}),
    ("llama3", "llama3", {}),
]


def _hf_tokens(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def _trained_text(tokenizer: Any, tokens: list[int], weights: list[float]) -> str:
    return tokenizer.decode([t for t, w in zip(tokens, weights, strict=True) if w > 0])


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize(("family", "name", "hf_kwargs"), FORMATS)
def test_tokens_equal_apply_chat_template(
    family_tokenizer: dict[str, Any],
    family: str,
    name: str,
    hf_kwargs: dict[str, Any],
    conversation: str,
) -> None:
    tokenizer = family_tokenizer[family]
    messages = CONVERSATIONS[conversation]
    renderer = get_renderer(name, tokenizer)

    tokens, weights = renderer.build_supervised_example(messages)
    assert tokens == _hf_tokens(tokenizer, messages, **hf_kwargs)
    assert len(weights) == len(tokens) and set(weights) <= {0.0, 1.0}

    prompt = renderer.build_generation_prompt(messages[:-1]).to_ints()
    assert prompt == _hf_tokens(tokenizer, messages[:-1], add_generation_prompt=True, **hf_kwargs)


def test_chatml_weights_cover_exactly_the_assistant_turns(smol_tokenizer: Any) -> None:
    renderer = get_renderer("chatml", smol_tokenizer)
    tokens, weights = renderer.build_supervised_example(MULTI_TURN)
    assert _trained_text(smol_tokenizer, tokens, weights) == (
        " Hello! How can I help?\n<|im_end|>"
        "<think>\nReverse the letters.\n</think>\n\ncba<|im_end|>"
    )
    tokens, weights = renderer.build_supervised_example(
        MULTI_TURN, TrainOnWhat.LAST_ASSISTANT_MESSAGE
    )
    assert _trained_text(smol_tokenizer, tokens, weights) == (
        "<think>\nReverse the letters.\n</think>\n\ncba<|im_end|>"
    )
    # the untrained tokens are everything else: markers, system and user turns, earlier answers
    untrained = smol_tokenizer.decode([t for t, w in zip(tokens, weights, strict=True) if w == 0])
    assert untrained == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n Hello! How can I help?\n<|im_end|>\n"
        "<|im_start|>user\nReverse 'abc'.\n<|im_end|>\n<|im_start|>assistant\n\n"
    )


def test_chatml_reads_the_default_system_prompt_of_the_template(
    family_tokenizer: dict[str, Any],
) -> None:
    smol = get_renderer("chatml", family_tokenizer["smollm2"])
    qwen = get_renderer("chatml", family_tokenizer["qwen2_5"])
    assert "SmolLM" in smol.default_system_prompt
    assert qwen.default_system_prompt == (
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    )
    # a conversation with its own system prompt gets no default one
    tokens, _ = smol.build_supervised_example(WITH_SYSTEM)
    assert "SmolLM" not in family_tokenizer["smollm2"].decode(tokens)


def test_qwen3_trains_the_think_block_only_when_thinking(family_tokenizer: dict[str, Any]) -> None:
    tokenizer = family_tokenizer["qwen3"]
    thinking = get_renderer("qwen3", tokenizer)
    plain = get_renderer("qwen3_disable_thinking", tokenizer)
    tokens, weights = thinking.build_supervised_example(SINGLE)
    assert _trained_text(tokenizer, tokens, weights) == (
        "<think>\n\n</think>\n\n17 + 25 = 42.<|im_end|>"
    )
    tokens, weights = plain.build_supervised_example(SINGLE)
    assert _trained_text(tokenizer, tokens, weights) == "17 + 25 = 42.<|im_end|>"
    assert tokenizer.decode(plain.build_generation_prompt(SINGLE[:1]).to_ints()).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    # reasoning of turns before the last user turn is dropped, as Qwen3's template does
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\nsecret\n</think>\n\nfirst"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "second"},
    ]
    tokens, _ = thinking.build_supervised_example(history)
    assert "secret" not in tokenizer.decode(tokens)


def test_llama3_trims_content_and_stops_on_eot(family_tokenizer: dict[str, Any]) -> None:
    tokenizer = family_tokenizer["llama3"]
    renderer = get_renderer("llama3", tokenizer)
    tokens, weights = renderer.build_supervised_example(MULTI_TURN, "last_assistant_message")
    assert _trained_text(tokenizer, tokens, weights) == (
        "<think>\nReverse the letters.\n</think>\n\ncba<|eot_id|>"
    )
    assert tokenizer.decode(tokens).startswith("<|begin_of_text|><|start_header_id|>system")
    (stop,) = renderer.get_stop_sequences()
    assert tokenizer.decode([stop]) == "<|eot_id|>"


def test_role_colon_format_weights_and_stop(smol_tokenizer: Any) -> None:
    renderer = get_renderer("role_colon", smol_tokenizer)
    tokens, weights = renderer.build_supervised_example(WITH_SYSTEM)
    assert smol_tokenizer.decode(tokens) == (
        "System: You answer in one short sentence.\n\n"
        "User: Name a primary colour.\n\n"
        "Assistant: Red is a primary colour.\n\nUser:"
    )
    # the trained tail completes the stop sequence, so the model learns to stop
    assert _trained_text(smol_tokenizer, tokens, weights) == " Red is a primary colour.\n\nUser:"
    prompt = renderer.build_generation_prompt(WITH_SYSTEM[:-1]).to_ints()
    assert smol_tokenizer.decode(prompt).endswith("Name a primary colour.\n\nAssistant:")
    assert renderer.get_stop_sequences() == ["\n\nUser:"]

    sampled = smol_tokenizer.encode(" Blue.\n\nUser: more", add_special_tokens=False)
    assert renderer.parse_response(sampled) == ({"role": "assistant", "content": "Blue."}, True)
    cut = smol_tokenizer.encode(" Blue is", add_special_tokens=False)
    assert renderer.parse_response(cut) == ({"role": "assistant", "content": "Blue is"}, False)


@pytest.mark.parametrize(("family", "name", "hf_kwargs"), FORMATS)
def test_parse_response_round_trips_a_sampled_turn(
    family_tokenizer: dict[str, Any], family: str, name: str, hf_kwargs: dict[str, Any]
) -> None:
    tokenizer = family_tokenizer[family]
    renderer = get_renderer(name, tokenizer)
    tokens, weights = renderer.build_supervised_example(SINGLE)
    sampled = [t for t, w in zip(tokens, weights, strict=True) if w > 0]
    if name == "qwen3_disable_thinking" or name == "chatml" or name == "llama3":
        expected = "17 + 25 = 42."
    else:
        expected = "<think>\n\n</think>\n\n17 + 25 = 42."
    assert renderer.parse_response(sampled) == ({"role": "assistant", "content": expected}, True)
    # a turn cut off by max_tokens is not clean
    message, clean = renderer.parse_response(sampled[:-1])
    assert not clean and message["role"] == "assistant"
    assert all(isinstance(s, int) for s in renderer.get_stop_sequences())


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (
            [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}],
            "messages[1].role: unknown role 'bot'",
        ),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}],
            "messages[1].content: empty assistant turn",
        ),
        (
            [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}],
            "messages[0].content: expected a string",
        ),
        ([{"content": "hi"}], "messages[0].role: missing"),
        ([{"role": "user", "content": "hi"}], "messages: no assistant turn to train on"),
    ],
)
def test_bad_conversations_name_the_message(
    smol_tokenizer: Any, messages: list[dict[str, Any]], error: str
) -> None:
    renderer = get_renderer("chatml", smol_tokenizer)
    with pytest.raises(RenderError, match=error.replace("[", r"\[").replace("]", r"\]")):
        renderer.build_supervised_example(messages)


def test_unknown_renderer_and_wrong_tokenizer_are_refused(smol_tokenizer: Any) -> None:
    with pytest.raises(RenderError, match=r"unknown renderer 'mistral'.*chatml"):
        get_renderer("mistral", smol_tokenizer)
    with pytest.raises(RenderError, match=r"no single token for '<\|eot_id\|>'"):
        get_renderer("llama3", smol_tokenizer)


def test_datum_from_tokens_weights_shifts_by_one() -> None:
    datum = datum_from_tokens_weights([5, 6, 7, 8], [0.0, 0.0, 1.0, 1.0])
    assert datum.model_input.to_ints() == [5, 6, 7]
    assert datum.loss_fn_inputs["target_tokens"].tolist() == [6, 7, 8]
    assert datum.loss_fn_inputs["weights"].tolist() == [0.0, 1.0, 1.0]
    short = datum_from_tokens_weights([5, 6, 7, 8], [0.0, 0.0, 1.0, 1.0], max_length=3)
    assert short.model_input.to_ints() == [5, 6]
    assert short.loss_fn_inputs["target_tokens"].tolist() == [6, 7]
    with pytest.raises(ValueError, match="weights: 1 weights for 2 tokens"):
        datum_from_tokens_weights([1, 2], [1.0])
