"""A Tinker-style loop, written only against Tinker's documented names, runs on a local mesh:
the import and the base URL are the only changes."""

from __future__ import annotations

import numpy as np
import pytest

import treadle as tinker  # the one changed import
from treadle import types
from treadle_runtime.launcher import LocalMesh

BASE_MODEL = "treadle/tiny-llama"


def make_datum(tokens: list[int], prompt_len: int) -> types.Datum:
    weights = [0.0] * (prompt_len - 1) + [1.0] * (len(tokens) - prompt_len)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.array(tokens[1:], dtype=np.int64)),
            "weights": types.TensorData.from_numpy(np.array(weights, dtype=np.float32)),
        },
    )


def test_tinker_style_loop(mesh: LocalMesh) -> None:
    service_client = tinker.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key)
    capabilities = service_client.get_server_capabilities()
    assert BASE_MODEL in [m.model_name for m in capabilities.supported_models]
    training_client = service_client.create_lora_training_client(base_model=BASE_MODEL, rank=8)
    tokenizer = training_client.get_tokenizer()
    examples = [("The sky is", " blue."), ("Two plus two is", " four.")]
    data = []
    for prompt, completion in examples:
        prompt_tokens = tokenizer.encode(prompt)
        tokens = prompt_tokens + tokenizer.encode(completion)
        data.append(make_datum(tokens, len(prompt_tokens)))

    losses = []
    for _ in range(6):
        fwd_bwd_future = training_client.forward_backward(data, "cross_entropy")
        optim_future = training_client.optim_step(types.AdamParams(learning_rate=1e-2))
        fwd_bwd_result = fwd_bwd_future.result()
        optim_future.result()
        losses.append(fwd_bwd_result.metrics["loss:sum"])
        logprobs = fwd_bwd_result.loss_fn_outputs[0]["logprobs"].tolist()
        assert len(logprobs) == data[0].model_input.length
    assert losses[-1] < losses[0]

    sampling_client = training_client.save_weights_and_get_sampling_client(name="final")
    prompt = types.ModelInput.from_ints(tokenizer.encode("The sky is"))
    params = types.SamplingParams(max_tokens=5, temperature=0.0, stop=["\n"])
    result = sampling_client.sample(prompt=prompt, sampling_params=params, num_samples=1).result()
    assert result.sequences[0].stop_reason in ("stop", "length")
    logprobs = sampling_client.compute_logprobs(prompt).result()
    assert logprobs[0] is None and len(logprobs) == prompt.length

    state_path = training_client.save_state(name="checkpoint").result().path
    restored = service_client.create_training_client_from_state(state_path)
    restored.load_state(state_path).result()
    info = restored.get_info()
    assert info.model_data.model_name == BASE_MODEL and info.lora_rank == 8
    again = restored.forward(data, "cross_entropy").result().metrics["loss:sum"]
    now = training_client.forward(data, "cross_entropy").result().metrics["loss:sum"]
    assert again == pytest.approx(now, rel=1e-5)
    service_client.close()


def rl_datum(tokens: list[int], prompt_len: int, q: np.ndarray, advantage: float) -> types.Datum:
    """An RL datum: the completion's tokens carry `advantage`, the prompt's 0."""
    advantages = [0.0] * (prompt_len - 1) + [advantage] * (len(tokens) - prompt_len)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.array(tokens[1:], dtype=np.int64)),
            "logprobs": types.TensorData.from_numpy(q.astype(np.float32)),
            "advantages": types.TensorData.from_numpy(np.array(advantages, dtype=np.float32)),
        },
    )


@pytest.mark.parametrize(
    ("loss_fn", "config"),
    [
        # GSPO's default band (1 - 3e-4, 1 + 4e-4) clips a sequence after its first step: widen it
        ("gspo", {"clip_low_threshold": 0.5, "clip_high_threshold": 2.0}),
        ("stable_reinforce", None),
    ],
)
def test_tinker_rl_losses_move_the_policy_toward_the_advantage(
    mesh: LocalMesh, loss_fn: str, config: dict[str, float] | None
) -> None:
    """One completion with A = +1 and one with A = −1, q the logprobs of the starting policy:
    over a few steps the first completion's logprobs rise and the second's fall."""
    service_client = tinker.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key)
    training_client = service_client.create_lora_training_client(base_model=BASE_MODEL, rank=8)
    tokenizer = training_client.get_tokenizer()
    prompt = tokenizer.encode("The sky is")
    completions = [prompt + tokenizer.encode(c) for c in (" blue.", " green and wet.")]
    start = training_client.forward(
        [make_datum(tokens, len(prompt)) for tokens in completions], "cross_entropy"
    ).result()
    q = [out["logprobs"].to_numpy() for out in start.loss_fn_outputs]
    data = [
        rl_datum(t, len(prompt), q_i, a)
        for t, q_i, a in zip(completions, q, (1.0, -1.0), strict=True)
    ]

    losses, completion_lp = [], []
    for _ in range(4):
        fwd_bwd_future = training_client.forward_backward(data, loss_fn, config)
        optim_future = training_client.optim_step(types.AdamParams(learning_rate=1e-2))
        result = fwd_bwd_future.result()
        optim_future.result()
        assert {"loss:sum", "ratio:mean", "clip_fraction:mean"} <= set(result.metrics)
        losses.append(result.metrics["loss:sum"])
        completion_lp.append(
            [out["logprobs"].to_numpy()[len(prompt) - 1 :].sum() for out in result.loss_fn_outputs]
        )
    assert all(np.isfinite(losses))
    (good_first, bad_first), (good_last, bad_last) = completion_lp[0], completion_lp[-1]
    assert good_last > good_first and bad_last < bad_first
    # on the first step q is the policy's own: every ratio is 1
    if loss_fn == "gspo":  # -Σ A, then with q fixed -Σ min(s·A, clip(s)·A) falls as s moves with A
        assert losses[0] == pytest.approx(-(len(completions[0]) - len(completions[1])), abs=1e-3)
        assert losses[-1] < losses[0]
    else:  # -Σ lp·A
        assert losses[0] == pytest.approx(-(good_first - bad_first), rel=1e-4)
    service_client.close()
