"""forward_backward_custom: a DPO-style loss trained through the linear surrogate gives the same
update as the equivalent built-in cross_entropy with hand-derived per-token weights."""

from __future__ import annotations

import numpy as np
import pytest

import treadle
from treadle import types
from treadle_runtime.launcher import LocalMesh

BASE_MODEL = "treadle/tiny-llama"
BETA = 0.5


def pair() -> list[types.Datum]:
    rng = np.random.default_rng(5)
    data = []
    for _ in range(2):  # chosen, rejected
        tokens = rng.integers(3, 2000, size=13)
        data.append(
            types.Datum(types.ModelInput.from_ints(tokens[:-1]), {"target_tokens": tokens[1:]})
        )
    return data


def dpo_loss(data, logprobs):  # type: ignore[no-untyped-def]
    import torch

    margin = BETA * (logprobs[0].sum() - logprobs[1].sum())
    loss = -torch.nn.functional.logsigmoid(margin)
    return loss, {"margin:mean": float(margin.detach())}


def test_custom_dpo_equals_built_in_with_derived_weights(mesh: LocalMesh) -> None:
    data = pair()
    adam = types.AdamParams(learning_rate=1e-2)
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
        custom = service.create_lora_training_client(BASE_MODEL, rank=4, seed=3)
        built_in = service.create_lora_training_client(BASE_MODEL, rank=4, seed=3)

        out = custom.forward_backward_custom(data, dpo_loss).result(timeout=60)
        assert "margin:mean" in out.metrics and "loss:sum" in out.metrics
        custom.optim_step(adam).result(timeout=60)

        forward = built_in.forward(data).result(timeout=60)
        lp = [o["logprobs"].to_numpy().astype(np.float64) for o in forward.loss_fn_outputs]
        margin = BETA * (lp[0].sum() - lp[1].sum())
        coefficient = BETA / (1.0 + np.exp(margin))  # -dLoss/dlp_chosen = beta * sigmoid(-margin)
        weighted = [
            types.Datum(
                d.model_input, {**d.loss_fn_inputs, "weights": np.full(12, sign * coefficient)}
            )
            for d, sign in zip(data, (1.0, -1.0), strict=True)
        ]
        built_in.forward_backward(weighted).result(timeout=60)
        built_in.optim_step(adam).result(timeout=60)

        after = [
            client.forward(data).result(timeout=60).loss_fn_outputs for client in (custom, built_in)
        ]
    for a, b in zip(*after, strict=True):
        np.testing.assert_allclose(a["logprobs"].to_numpy(), b["logprobs"].to_numpy(), atol=1e-5)
    assert out.metrics["loss:sum"] == pytest.approx(float(np.log1p(np.exp(-margin))), rel=1e-5)
