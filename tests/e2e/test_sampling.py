"""Sampling through the whole mesh of real processes: the sampler agrees with the trainer, and a
sampling client stays bound to the weights it was made for."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

import treadle
from fixtures.data import token_batch
from treadle import types
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY

PROMPT = [101, 202, 303, 404, 505, 606]


@pytest.fixture(scope="module")
def service(mesh: LocalMesh) -> Iterator[treadle.ServiceClient]:
    """An SDK client of the mesh."""
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as client:
        yield client


def train(training: treadle.TrainingClient, steps: int, seed: int = 0) -> None:
    """`steps` supervised steps with a large learning rate, so the adapter moves visibly."""
    batch = token_batch(seed)
    adam = types.AdamParams(learning_rate=2e-2)
    for _ in range(steps):
        training.forward_backward(batch).result(timeout=60)
        training.optim_step(adam).result(timeout=60)


def trainer_logprobs(
    training: treadle.TrainingClient, prompt: Sequence[int], completions: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """The trainer's forward logprobs of each completion after `prompt` (one datum each)."""
    data = []
    for completion in completions:
        tokens = np.array([*prompt, *completion])
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={
                    "target_tokens": tokens[1:],
                    "weights": np.ones(len(tokens) - 1, np.float32),
                },
            )
        )
    output = training.forward(data).result(timeout=60)
    return [o["logprobs"].to_numpy()[len(prompt) - 1 :] for o in output.loss_fn_outputs]


def test_sampled_logprobs_equal_the_trainers_forward_so_the_kl_is_zero(
    service: treadle.ServiceClient,
) -> None:
    training = service.create_lora_training_client(base_model=TINY, rank=8, seed=5)
    train(training, 4)
    sampler = training.save_weights_and_get_sampling_client()
    response = sampler.sample(
        types.ModelInput.from_ints(PROMPT),
        num_samples=4,
        sampling_params=types.SamplingParams(max_tokens=24, temperature=1.0, seed=11),
    ).result(timeout=60)
    assert response.weights_version == sampler.model_path
    completions = [s.tokens for s in response.sequences]
    assert len({tuple(c) for c in completions}) == 4
    expected = trainer_logprobs(training, PROMPT, completions)
    differences = []
    for sequence, lp_trainer in zip(response.sequences, expected, strict=True):
        q = np.array(sequence.logprobs, np.float64)
        assert q.shape == lp_trainer.shape
        differences.append(np.abs(q - lp_trainer).max())
        assert abs(np.mean(q - lp_trainer)) <= 1e-4  # per-token estimate of KL(sampler || trainer)
    assert max(differences) <= 1e-4, differences

    base = service.create_sampling_client(base_model=TINY)
    scored = types.ModelInput.from_ints(PROMPT + completions[0])
    adapted, plain = (c.compute_logprobs(scored).result(timeout=60) for c in (sampler, base))
    assert max(abs(a - b) for a, b in zip(adapted[1:], plain[1:], strict=True)) > 1e-2


def test_a_new_sampling_client_samples_new_weights_and_the_old_one_keeps_its_version(
    service: treadle.ServiceClient,
) -> None:
    training = service.create_lora_training_client(base_model=TINY, rank=4, seed=6)
    train(training, 2)
    old = training.save_weights_and_get_sampling_client()
    params = types.SamplingParams(max_tokens=12, temperature=1.0, seed=3)
    prompt = types.ModelInput.from_ints(PROMPT)
    before = old.sample(prompt, sampling_params=params).result(timeout=60)
    old_trainer = trainer_logprobs(training, PROMPT, [before.sequences[0].tokens])[0]

    train(training, 3, seed=1)
    new = training.save_weights_and_get_sampling_client()
    assert new.model_path != old.model_path
    after_old = old.sample(prompt, sampling_params=params).result(timeout=60)
    after_new = new.sample(prompt, sampling_params=params).result(timeout=60)

    assert after_old.weights_version == old.model_path
    assert after_new.weights_version == new.model_path
    assert after_old.sequences[0].tokens == before.sequences[0].tokens  # the old weights still
    np.testing.assert_allclose(after_old.sequences[0].logprobs, old_trainer, atol=1e-4)
    new_trainer = trainer_logprobs(training, PROMPT, [after_new.sequences[0].tokens])[0]
    np.testing.assert_allclose(after_new.sequences[0].logprobs, new_trainer, atol=1e-4)
    scored = types.ModelInput.from_ints(PROMPT + before.sequences[0].tokens)
    lp_old, lp_new = (c.compute_logprobs(scored).result(timeout=60) for c in (old, new))
    assert max(abs(a - b) for a, b in zip(lp_old[1:], lp_new[1:], strict=True)) > 1e-3


def test_stops_lengths_and_unknown_paths_through_the_sdk(service: treadle.ServiceClient) -> None:
    base = service.create_sampling_client(base_model=TINY)
    prompt = types.ModelInput.from_ints(PROMPT)
    free = base.sample(prompt, sampling_params=types.SamplingParams(max_tokens=16, seed=2))
    sequence = free.result(timeout=60).sequences[0]
    assert sequence.stop_reason == "length" and len(sequence.tokens) == 16
    stop_id = sequence.tokens[4]
    cut = sequence.tokens.index(stop_id) + 1
    by_id = base.sample(
        prompt, sampling_params=types.SamplingParams(max_tokens=16, seed=2, stop=[stop_id])
    ).result(timeout=60)
    assert (by_id.sequences[0].tokens, by_id.sequences[0].stop_reason) == (
        sequence.tokens[:cut],
        "stop",
    )
    tokenizer = service.get_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")
    text = tokenizer.decode(sequence.tokens[:9])
    stop = text[len(tokenizer.decode(sequence.tokens[:7])) :]
    by_text = base.sample(
        prompt, sampling_params=types.SamplingParams(max_tokens=16, seed=2, stop=stop)
    ).result(timeout=60)
    assert by_text.sequences[0].stop_reason == "stop"
    assert len(by_text.sequences[0].tokens) <= 9

    missing = service.create_sampling_client(model_path="treadle://no-run/sampler_weights/none")
    with pytest.raises(treadle.RequestFailedError) as failure:
        missing.sample(prompt, sampling_params=types.SamplingParams(max_tokens=2)).result(60)
    assert failure.value.code == "NOT_FOUND"
