"""Pipelined versus naive training loop through the scheduler, steps per second in one run:
(a) while four other tenants keep the trainer busy (target >= 1.8x, the seed's clock-cycle
effect), and (b) alone on an idle trainer, where a work-conserving scheduler keeps the naive
loop's penalty small (a fixed lock-step clock would charge it the full two cycles per step).
"""

from __future__ import annotations

import argparse
import threading
import time

from local_mesh import local_mesh, write_results

import treadle
from treadle import types

TINY = "treadle/tiny-llama"


def batch(length: int = 64, datums: int = 2) -> list[types.Datum]:
    tokens = [(7 * i) % 2000 + 3 for i in range(length + 1)]
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:]},
    )
    return [datum] * datums


def steps_per_second(training: treadle.TrainingClient, steps: int, pipelined: bool) -> float:
    data, adam = batch(), types.AdamParams(learning_rate=1e-4)
    started = time.monotonic()
    if pipelined:
        pending = [(training.forward_backward(data), training.optim_step(adam))]
        for step in range(steps):
            if step + 1 < steps:
                pending.append((training.forward_backward(data), training.optim_step(adam)))
            fb, opt = pending.pop(0)
            fb.result(timeout=120)
            opt.result(timeout=120)
    else:
        for _ in range(steps):
            training.forward_backward(data).result(timeout=120)
            training.optim_step(adam).result(timeout=120)
    return steps / (time.monotonic() - started)


def background(endpoint: str, key: str, stop: threading.Event) -> None:
    with treadle.ServiceClient(base_url=endpoint, api_key=key) as service:
        training = service.create_lora_training_client(TINY, rank=8)
        data, adam = batch(), types.AdamParams(learning_rate=1e-4)
        pending = [(training.forward_backward(data), training.optim_step(adam))]
        while not stop.is_set():
            pending.append((training.forward_backward(data), training.optim_step(adam)))
            fb, opt = pending.pop(0)
            fb.result(timeout=120)
            opt.result(timeout=120)


def measure(endpoint: str, key: str, steps: int) -> tuple[float, float]:
    with treadle.ServiceClient(base_url=endpoint, api_key=key) as service:
        training = service.create_lora_training_client(TINY, rank=8)
        steps_per_second(training, 3, pipelined=True)  # warm up
        fast = steps_per_second(training, steps, pipelined=True)
        slow = steps_per_second(training, steps, pipelined=False)
    return fast, slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--busy-tenants", type=int, default=4)
    args = parser.parse_args()
    with local_mesh(TINY, args.busy_tenants + 1) as (mesh, keys):
        alone = measure(mesh.endpoint, keys[0], args.steps)
        stop = threading.Event()
        others = [
            threading.Thread(target=background, args=(mesh.endpoint, key, stop)) for key in keys[1:]
        ]
        for thread in others:
            thread.start()
        time.sleep(3.0)
        busy = measure(mesh.endpoint, keys[0], args.steps)
        stop.set()
        for thread in others:
            thread.join()
    print("\nPipelined vs naive loop (steps/s, tiny-llama, 2 x 64 tokens)")
    print(f"  {'condition':<28} {'pipelined':>10} {'naive':>10} {'ratio':>8}")
    rows = {f"{args.busy_tenants} other tenants busy": busy, "alone on an idle trainer": alone}
    for label, (fast, slow) in rows.items():
        print(f"  {label:<28} {fast:>10.2f} {slow:>10.2f} {fast / slow:>7.2f}x")
    path = write_results(
        "scheduler_pipelining",
        {
            "steps": args.steps,
            "busy": {"pipelined": busy[0], "naive": busy[1], "ratio": busy[0] / busy[1]},
            "alone": {"pipelined": alone[0], "naive": alone[1], "ratio": alone[0] / alone[1]},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
