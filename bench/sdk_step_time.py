"""A training step through the SDK versus the same step in a plain in-process PEFT loop.

The loop other Tinker-compatible servers were measured with on this machine: a tiny Llama
(2 layers, hidden 128, intermediate 384, SmolLM2 tokenizer, 6.7M parameters: treadle/tiny-llama),
rank 8, 4 datums x 64 tokens, forward_backward + optim_step submitted together, then awaited.
Peers measured here: 360 ms/step and 514 ms/step. Target: <= 110 ms/step, measured beside the
plain PEFT loop on the same model in the same run. Also the submit-to-result latency of a small
forward (1 x 16 tokens) through the SDK next to the same forward on the trainer engine called in
process: the difference is what the SDK, the scheduler and gRPC add to one call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from local_mesh import local_mesh, write_results
from peft import get_peft_model

import treadle
from treadle import types
from treadle.contract.losses import CROSS_ENTROPY
from treadle.v1 import common_pb2
from treadle.wire import datums_to_proto
from treadle_models import LoraSpec, load_model, peft_lora_config, target_logprobs
from treadle_runtime.launcher import UpConfig
from treadle_trainer.engine import TrainerEngine
from treadle_trainer.inputs import parse_forward_backward

TINY = "treadle/tiny-llama"


def tokens(datums: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(3, 2000, size=(datums, length + 1))


def plain_peft_ms(steps: int, datums: int, length: int) -> float:
    """ms/step of forward, summed cross entropy, backward and AdamW in one process."""
    model = get_peft_model(load_model(TINY), peft_lora_config(LoraSpec(rank=8)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-12, weight_decay=0)
    batch = torch.from_numpy(tokens(datums, length))
    times = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        logits = model(input_ids=batch[:, :-1]).logits
        loss = -target_logprobs(logits, batch[:, 1:]).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:]) * 1e3


SMALL_INPUT, SMALL_TARGETS = list(range(3, 19)), list(range(4, 20))


def engine_forward_ms(calls: int = 20) -> float:
    """Median ms of the small forward on the trainer engine in this process."""
    engine = TrainerEngine(TINY)
    engine.create_adapter("bench", "tenant", LoraSpec(rank=8), seed=0)
    small = [types.Datum(types.ModelInput.from_ints(SMALL_INPUT), {"target_tokens": SMALL_TARGETS})]
    request = common_pb2.ForwardBackwardRequest(
        data=datums_to_proto(small, CROSS_ENTROPY), loss_fn=CROSS_ENTROPY, forward_only=True
    )
    times = []
    for _ in range(calls + 2):
        started = time.perf_counter()
        batch = parse_forward_backward(request, engine.spec.vocab_size, engine.spec.max_seq_len)
        engine.forward_backward([("bench", batch)])
        times.append(time.perf_counter() - started)
    engine.close()
    return statistics.median(times[2:]) * 1e3


def sdk_ms(endpoint: str, key: str, steps: int, datums: int, length: int) -> tuple[float, float]:
    """(ms/step through the SDK, median ms of a small forward's round trip)."""
    rows = tokens(datums, length)
    data = [types.Datum(types.ModelInput.from_ints(r[:-1]), {"target_tokens": r[1:]}) for r in rows]
    adam = types.AdamParams(learning_rate=1e-4)
    with treadle.ServiceClient(base_url=endpoint, api_key=key) as service:
        training = service.create_lora_training_client(TINY, rank=8)
        for _ in range(2):  # warm up
            training.forward_backward(data).result()
            training.optim_step(adam).result()
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            fb, opt = training.forward_backward(data), training.optim_step(adam)
            fb.result()
            opt.result()
            times.append(time.perf_counter() - started)
        small = [
            types.Datum(types.ModelInput.from_ints(SMALL_INPUT), {"target_tokens": SMALL_TARGETS})
        ]
        latency = []
        for _ in range(20):
            started = time.perf_counter()
            training.forward(small).result()
            latency.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3, statistics.median(latency) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=UpConfig().worker_threads()[0],
        help="torch threads of the trainer and the in-process loops (default: the trainer's)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    plain = plain_peft_ms(args.steps, 4, 64)
    in_process = engine_forward_ms()
    with local_mesh(TINY, 1, args.threads) as (mesh, keys):
        step, latency = sdk_ms(mesh.endpoint, keys[0], args.steps, 4, 64)
    print("\nTraining step, tiny-llama rank 8, 4 x 64 tokens (median ms/step)")
    print(f"  plain in-process PEFT loop      {plain:8.1f}")
    ratio = f"({step / plain:.2f}x the plain loop; target <= 110 ms)"
    print(f"  Treadle through the SDK         {step:8.1f}   {ratio}")
    print("  peers measured on this machine    360.0 / 514.0")
    print("\nSmall forward (1 x 16 tokens), submit to result (median ms)")
    print(f"  trainer engine in process       {in_process:8.1f}")
    print(f"  through the SDK                 {latency:8.1f}   (+{latency - in_process:.1f} ms)")
    path = write_results(
        "sdk_step_time",
        {
            "plain_peft_ms": plain,
            "sdk_ms": step,
            "ratio": step / plain,
            "small_forward_ms": latency,
            "small_forward_engine_ms": in_process,
            "threads": args.threads,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
