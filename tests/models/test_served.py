"""A `--base-model` value: SOURCE alone, or NAME=SOURCE to serve SOURCE's weights under NAME;
bad values are refused in one line naming the field, without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from treadle_models.served import ServedModel, served_model, served_models

LLAMA = "meta-llama/Llama-3.2-1B"


def test_a_source_alone_is_served_under_its_own_name() -> None:
    assert served_model(" treadle/tiny-llama ") == ServedModel(
        "treadle/tiny-llama", "treadle/tiny-llama"
    )
    assert served_model("treadle/tiny-llama").flag() == "treadle/tiny-llama"


def test_name_equals_source_serves_the_source_under_the_name() -> None:
    served = served_model(f" {LLAMA} = treadle/tiny-llama ")
    assert served == ServedModel(LLAMA, "treadle/tiny-llama")
    assert served.flag() == f"{LLAMA}=treadle/tiny-llama"
    assert served_model(served.flag()) == served


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("=treadle/tiny-llama", r"^base_model: '=treadle/tiny-llama' has an empty name"),
        (f"{LLAMA}=", rf"^base_model: '{LLAMA}=' has an empty source"),
        (" = ", r"^base_model: ' = ' has an empty name"),
        (
            "treadle/tiny-llama=treadle/tiny-qwen2",
            r"^base_model: 'treadle/tiny-llama' is a built-in model and cannot name "
            r"'treadle/tiny-qwen2'",
        ),
    ],
)
def test_a_malformed_value_is_refused_naming_the_field(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        served_model(value)
    with pytest.raises(ValueError, match=message.replace("base_model", "model")):
        served_model(value, field="model")


def test_a_list_keeps_its_order_and_allows_one_source_under_two_names() -> None:
    models = served_models(f"{LLAMA}=treadle/tiny-llama, treadle/tiny-llama,treadle/tiny-qwen2")
    assert [(m.name, m.source) for m in models] == [
        (LLAMA, "treadle/tiny-llama"),
        ("treadle/tiny-llama", "treadle/tiny-llama"),
        ("treadle/tiny-qwen2", "treadle/tiny-qwen2"),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (" , ", r"^base_model: at least one base model is required$"),
        (
            f"{LLAMA}=treadle/tiny-llama,{LLAMA}=treadle/tiny-qwen2",
            rf"^base_model: '{LLAMA}' is served twice$",
        ),
        ("treadle/tiny-qwen3,treadle/tiny-qwen3", r"^base_model: 'treadle/tiny-qwen3' is served"),
        (  # a name that is another entry's source, but serves other weights
            "/models/b=/models/a,x=/models/b",
            r"^base_model: '/models/b' is the source of another served model, so it cannot "
            r"also name '/models/a'$",
        ),
    ],
)
def test_a_bad_list_is_refused_in_one_line_naming_the_field(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        served_models(value)
    assert "\n" not in str(refused.value)


def test_reading_a_list_imports_no_torch() -> None:
    program = (
        "import sys; from treadle_models.served import served_models; "
        f"served_models('{LLAMA}=treadle/tiny-llama'); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
