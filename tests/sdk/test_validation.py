"""Bad input is caught in the client, before any request is sent, with the field named."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import treadle
from treadle import types, wire
from treadle.errors import ValidationError
from treadle.paths import same_weights


def datum(length: int = 4, **inputs: object) -> types.Datum:
    tokens = list(range(1, length + 1))
    loss_inputs = {"target_tokens": tokens, **inputs}
    return types.Datum(types.ModelInput.from_ints(tokens), loss_inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "loss_fn", "field"),
    [
        ([datum(weights=[1.0, 1.0])], "cross_entropy", "data[0].loss_fn_inputs.weights"),
        ([datum(target_tokens=[1.0, 2.0, 3.0, 4.0])], "cross_entropy", "target_tokens: dtype"),
        ([datum(weights=[1.0, float("nan"), 1.0, 1.0])], "cross_entropy", "weights: non-finite"),
        (
            [datum(logprobs=[0.0] * 4, advantages=[1.0, np.inf, 0.0, 0.0])],
            "ppo",
            "advantages: non-finite value inf",
        ),
        ([datum(logprobs=[0.0] * 4)], "importance_sampling", "advantages: is required"),
        ([], "cross_entropy", "data: at least one"),
        ([datum(0)], "cross_entropy", "model_input: has no tokens"),
    ],
)
def test_bad_datums_are_refused(data: list[types.Datum], loss_fn: str, field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        wire.datums_to_proto(data, loss_fn)


def test_negative_token_ids_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"data\[0\]\.model_input"):
        wire.datums_to_proto([types.Datum(types.ModelInput.from_ints([1, -2]), {})], None)


@pytest.mark.parametrize(
    ("loss_fn", "config", "message"),
    [
        ("hinge", None, "loss_fn: unknown loss 'hinge'"),
        ("ppo", {"clip_lo": 0.8}, "loss_fn_config.clip_lo: unknown key"),
        ("dro", {}, "loss_fn_config.beta: is required by dro"),
        ("ppo", {"clip_low_threshold": float("inf")}, "must be finite"),
    ],
)
def test_bad_losses_are_refused(
    loss_fn: str, config: dict[str, float] | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        wire.check_loss(loss_fn, config)


def test_sampling_params_are_checked() -> None:
    for params, field in (
        (types.SamplingParams(max_tokens=0), "max_tokens"),
        (types.SamplingParams(max_tokens=4, temperature=-1.0), "temperature"),
        (types.SamplingParams(max_tokens=4, top_p=0.0), "top_p"),
    ):
        with pytest.raises(ValidationError, match=field):
            wire.sampling_params_to_proto(params)


def test_inputs_accept_lists_numpy_and_torch() -> None:
    import torch

    for weights in ([1.0, 0.5], np.array([1.0, 0.5]), torch.tensor([1.0, 0.5])):
        d = types.Datum(
            types.ModelInput.from_ints([5, 6]), {"target_tokens": [6, 7], "weights": weights}
        )
        assert d.loss_fn_inputs["weights"].dtype == "float32"
        assert d.loss_fn_inputs["weights"].tolist() == [1.0, 0.5]
    assert types.ModelInput.from_ints(torch.tensor([3, 4])).to_ints() == [3, 4]


def test_the_sdk_imports_no_torch() -> None:
    code = "import sys, treadle, treadle.types, treadle.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"keepalive_seconds": 2}, "keepalive_seconds"),
        ({"keepalive_timeout": 0}, "keepalive_timeout"),
    ],
)
def test_keepalive_the_scheduler_would_refuse_is_caught_before_connecting(
    settings: dict[str, float], field: str
) -> None:
    started = time.monotonic()
    with pytest.raises(treadle.ValidationError, match=f"^{field}: must be"):
        treadle.ServiceClient(base_url="127.0.0.1:9", api_key="tml-any", **settings)
    assert time.monotonic() - started < 1  # refused at once, nothing was dialled


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("treadle://run/sampler_weights/s", "tinker://run/sampler_weights/s", True),
        ("tinker://run/sampler_weights/s", "tinker://run/sampler_weights/s", True),
        ("treadle://run/sampler_weights/s", "treadle://run/weights/s", False),
        ("treadle://run/sampler_weights/s", "treadle://other/sampler_weights/s", False),
        ("treadle/tiny-llama", "treadle/tiny-llama", True),
        ("treadle/tiny-llama", "tinker://run/sampler_weights/s", False),
    ],
)
def test_weights_are_the_same_in_either_scheme(a: str, b: str, same: bool) -> None:
    assert same_weights(a, b) is same
