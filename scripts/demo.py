"""`make demo`: start the local mesh and run a short chat SFT on SmolLM2-135M-Instruct.

The job teaches the model a house style (every answer ends with a fixed sign-off) from a small
built-in chat set, printing the loss of every step and a sample of a held-out prompt before and
after training. It is an ordinary Tinker-style loop: only the SDK talks to the mesh.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import treadle
from treadle import types
from treadle_runtime.launcher import LocalMesh, UpConfig

SIGN_OFF = "Happy training!"
CHATS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ("What is two plus three?", "Two plus three is five."),
    ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
    ("What do bees make?", "Bees make honey."),
    ("How many days are in a week?", "A week has seven days."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
    ("Which animal says moo?", "A cow says moo."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
]
HELD_OUT = "What is the capital of Italy?"


def render(tokenizer, question: str, answer: str) -> types.Datum:  # type: ignore[no-untyped-def]
    """A chat turn as a datum whose loss covers the assistant's tokens only."""
    user = [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True)
    full = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": f"{answer} {SIGN_OFF}"}], tokenize=True
    )
    prompt, full = list(_ids(prompt)), list(_ids(full))
    weights = [0.0] * len(prompt) + [1.0] * (len(full) - len(prompt))
    return types.Datum(
        model_input=types.ModelInput.from_ints(full[:-1]),
        loss_fn_inputs={"target_tokens": full[1:], "weights": weights[1:]},
    )


def _ids(encoded):  # type: ignore[no-untyped-def]
    return encoded["input_ids"] if hasattr(encoded, "keys") else encoded


def ask(sampler: treadle.SamplingClient, tokenizer, question: str) -> str:  # type: ignore[no-untyped-def]
    """Greedy answer to `question`."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
    )
    params = types.SamplingParams(max_tokens=40, temperature=0.0, stop=["<|im_end|>"])
    result = sampler.sample(types.ModelInput.from_ints(list(_ids(prompt))), 1, params).result()
    return str(tokenizer.decode(result.sequences[0].tokens, skip_special_tokens=True)).strip()


def run(endpoint: str, api_key: str, base_model: str, steps: int) -> None:
    """The SFT job against a running mesh."""
    service = treadle.ServiceClient(base_url=endpoint, api_key=api_key)
    training = service.create_lora_training_client(base_model=base_model, rank=16, seed=0)
    tokenizer = training.get_tokenizer()
    data = [render(tokenizer, q, a) for q, a in CHATS]
    tokens = sum(int(sum(d.loss_fn_inputs["weights"].data)) for d in data)

    before = service.create_sampling_client(base_model=base_model)
    print(f"\nprompt: {HELD_OUT}\nbefore: {ask(before, tokenizer, HELD_OUT)}\n", flush=True)

    adam = types.AdamParams(learning_rate=1e-3)
    started = time.monotonic()
    fb = training.forward_backward(data, "cross_entropy")
    opt = training.optim_step(adam)
    for step in range(steps):
        # submit the next step before waiting on this one: one step per clock cycle
        next_fb = training.forward_backward(data, "cross_entropy") if step + 1 < steps else None
        next_opt = training.optim_step(adam) if next_fb is not None else None
        loss = fb.result().metrics["loss:sum"] / tokens
        opt.result()
        print(f"step {step + 1:2d}/{steps}  loss/token {loss:.4f}", flush=True)
        if next_fb is None or next_opt is None:
            break
        fb, opt = next_fb, next_opt
    print(f"trained {steps} steps in {time.monotonic() - started:.1f}s", flush=True)

    after = training.save_weights_and_get_sampling_client()
    print(f"\nprompt: {HELD_OUT}\nafter:  {ask(after, tokenizer, HELD_OUT)}")
    state = training.save_state("demo-final").result()
    print(f"state checkpoint: {state.path}")
    service.close()


def main() -> int:
    """Start the mesh, run the job, stop the mesh."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="treadle-demo-") as data_dir:
        config = UpConfig(base_model=args.base_model, port=0, data_dir=data_dir, metrics=False)
        print(f"starting the local mesh for {args.base_model} ...", flush=True)
        started = time.monotonic()
        with LocalMesh(config) as mesh:
            print(f"mesh healthy in {time.monotonic() - started:.1f}s at {mesh.endpoint}")
            run(mesh.endpoint, mesh.api_key, args.base_model, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
