"""tinker-cookbook's sl_loop and rl_loop call sequences, replayed with the official tinker SDK
against a gateway; run by tests/gateway/test_sdk_versions.py inside one SDK version's own
virtualenv (it imports nothing of Treadle's). Prints one JSON object of what it saw.

    python replay.py BASE_URL API_KEY BASE_MODEL

sl_loop: a LoRA client; each step forward_backward (cross_entropy) and optim_step submitted
together, then both awaited; the per-datum logprobs read. rl_loop: each step the weights saved
and sampled (save_weights_and_get_sampling_client), samples with logprobs and a stop sequence,
rewards centred per group, and an importance_sampling (then ppo) forward_backward on them. Then:
state and sampler checkpoints saved by name, a forward, compute_logprobs, and a new client from
the state checkpoint with its optimizer, which trains on.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import tinker
from tinker import types

STEPS = 4
TOKENS = list(range(100, 132))
PROMPTS = [[1, 20, 21, 22], [1, 30, 31, 32]]
GROUP = 4


def ready(made: Any) -> Any:
    """A client from a client-creation call (tinker 0.38 returns a future of it)."""
    result = getattr(made, "result", None)
    return result() if callable(result) and "Future" in type(made).__name__ else made


def sl_datum() -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(TOKENS[:-1]),
        loss_fn_inputs={"target_tokens": TOKENS[1:], "weights": [1.0] * (len(TOKENS) - 1)},
    )


def rl_datum(prompt: list[int], tokens: list[int], logprobs: list[float], advantage: float) -> Any:
    sequence = prompt + tokens
    n_prompt = len(prompt) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(sequence[:-1]),
        loss_fn_inputs={
            "target_tokens": sequence[1:],
            "logprobs": [0.0] * n_prompt + list(logprobs),
            "advantages": [0.0] * n_prompt + [advantage] * len(tokens),
        },
    )


def main() -> None:
    base_url, api_key, base_model = sys.argv[1:4]
    report: dict[str, Any] = {"version": tinker.__version__}
    service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
    training = ready(service.create_lora_training_client(base_model=base_model, rank=8))
    report["model_id"] = training.model_id

    # sl_loop
    adam = types.AdamParams(learning_rate=5e-3, beta1=0.9, beta2=0.95, eps=1e-8)
    losses, logprob_lengths = [], []
    for _ in range(STEPS):
        fwd = training.forward_backward([sl_datum(), sl_datum()], loss_fn="cross_entropy")
        opt = training.optim_step(adam)
        result, stepped = fwd.result(), opt.result()
        losses.append(result.metrics["loss:sum"])
        logprob_lengths.append([len(o["logprobs"].tolist()) for o in result.loss_fn_outputs])
        report["optim_metrics"] = stepped.metrics
    report["sl_losses"], report["logprob_lengths"] = losses, logprob_lengths
    report["metric_keys"] = sorted(result.metrics)

    # rl_loop
    rl = []
    for step in range(2):
        sampler = ready(training.save_weights_and_get_sampling_client())
        params = types.SamplingParams(max_tokens=6, stop=["\n\n"], temperature=1.0, seed=step)
        datums = []
        for prompt in PROMPTS:
            samples = sampler.sample(
                prompt=types.ModelInput.from_ints(prompt), num_samples=GROUP, sampling_params=params
            ).result()
            assert len(samples.sequences) == GROUP
            rewards = [float(s.tokens[0] % 2) for s in samples.sequences]
            mean = sum(rewards) / len(rewards)
            for sequence, reward in zip(samples.sequences, rewards, strict=True):
                assert sequence.logprobs is not None
                assert len(sequence.logprobs) == len(sequence.tokens)
                datums.append(rl_datum(prompt, sequence.tokens, sequence.logprobs, reward - mean))
        loss_fn = "importance_sampling" if step == 0 else "ppo"
        fwd = training.forward_backward(datums, loss_fn=loss_fn)
        opt = training.optim_step(types.AdamParams(learning_rate=1e-3))
        rl.append({"loss_fn": loss_fn, "metrics": fwd.result().metrics, "datums": len(datums)})
        opt.result()
    report["rl"] = rl

    # checkpoints, forward, compute_logprobs, resume
    report["state_path"] = training.save_state("replay-state").result().path
    report["sampler_path"] = training.save_weights_for_sampler("replay-sampler").result().path
    report["forward_loss"] = (
        training.forward([sl_datum()], "cross_entropy").result().metrics["loss:sum"]
    )
    final = ready(service.create_sampling_client(model_path=report["sampler_path"]))
    report["final_logprobs"] = final.compute_logprobs(types.ModelInput.from_ints(TOKENS)).result()
    resumed = ready(service.create_training_client_from_state_with_optimizer(report["state_path"]))
    report["resumed_model_id"] = resumed.model_id
    report["resumed_loss"] = (
        resumed.forward([sl_datum()], "cross_entropy").result().metrics["loss:sum"]
    )
    resumed.forward_backward([sl_datum()], "cross_entropy").result()
    report["resumed_step"] = resumed.optim_step(adam).result().metrics
    close = getattr(service, "close", None)
    if callable(close):  # tinker 0.29 and later finish their session
        close("success").result()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
