"""Trainer utilisation under a growing number of tenants, through the whole local mesh.

`treadle_runtime.launcher.LocalMesh` (via bench/local_mesh.py) starts every service as its own
process (tiny-llama on the CPU). N tenants (N = 1, 2, 4, 8), each with its own API key, rank-8
model and thread, run the loop a pipelined Tinker user writes: submit forward_backward (2 datums
× 64 tokens) and optim_step back to back, wait for both, then spend 50 ms on client-side work.
For each N the window is measured after a warm-up: aggregate tokens/s over all tenants, and the
trainer's busy fraction = Δ treadle_scheduler_trainer_busy_seconds_total / wall time (the
scheduler's view of the time its trainer spent executing cycles), with the trainer's own MFU
while busy (Δ treadle_trainer_flops_total / Δ busy seconds / measured peak).
Targets: busy ≥ 90 % once demand exceeds capacity, and tokens/s never falls as N grows.

    python bench/trainer_utilization.py            # about 4 minutes
"""

from __future__ import annotations

import argparse
import itertools
import os
import threading
import time

import torch
from common import next_token_datums, table, write_results
from local_mesh import local_mesh, scrape

import treadle
from treadle import types
from treadle.contract.losses import CROSS_ENTROPY
from treadle.tensors import decode
from treadle_runtime.launcher import LocalMesh
from treadle_trainer.flops import measure_matmul_peak

MODEL = "treadle/tiny-llama"


def sample(mesh: LocalMesh, service: str, name: str) -> float:
    """One metric of a service, summed over its labels."""
    samples = scrape(mesh, service)
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def batch(seed: int, datums: int, tokens: int) -> list[types.Datum]:
    """The SDK's datums of a fixed next-token batch."""
    out = []
    for d in next_token_datums(datums, tokens, seed):
        ids = list(d.model_input.chunks[0].encoded_text.tokens)
        targets = decode(d.loss_fn_inputs["target_tokens"])
        out.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(ids),
                loss_fn_inputs={"target_tokens": targets},
            )
        )
    return out


class Tenant(threading.Thread):
    """One tenant's training loop; counts the tokens of completed steps."""

    def __init__(self, endpoint: str, key: str, seed: int, args: argparse.Namespace) -> None:
        super().__init__(daemon=True)
        self.client = treadle.ServiceClient(base_url=endpoint, api_key=key)
        self.training = self.client.create_lora_training_client(MODEL, rank=8, seed=seed)
        self.data = batch(seed, args.datums, args.tokens)
        self.tokens_per_step = args.datums * args.tokens
        self.think = args.think_ms / 1000
        self.tokens = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def step(self) -> None:
        """One pipelined step (forward_backward and optim_step submitted together)."""
        fb = self.training.forward_backward(self.data, CROSS_ENTROPY)
        opt = self.training.optim_step(types.AdamParams(learning_rate=1e-4))
        fb.result()
        opt.result()
        self.tokens += self.tokens_per_step

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
                time.sleep(self.think)  # the client's own work between steps
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def measure(mesh: LocalMesh, n: int, args: argparse.Namespace) -> dict:
    """Run n tenants; tokens/s and busy fraction over the measured window."""
    keys = [f"tml-bench-{i}" for i in range(n)]
    tenants = [Tenant(mesh.endpoint, key, seed=i, args=args) for i, key in enumerate(keys)]
    for tenant in tenants:
        tenant.start()
    time.sleep(args.warmup)
    names = ("treadle_trainer_busy_seconds_total", "treadle_trainer_flops_total")
    tokens0 = sum(t.tokens for t in tenants)
    busy0 = sample(mesh, "scheduler", "treadle_scheduler_trainer_busy_seconds_total")
    trainer0 = [sample(mesh, "trainer-0", name) for name in names]
    started = time.perf_counter()
    time.sleep(args.window)
    wall = time.perf_counter() - started
    tokens = sum(t.tokens for t in tenants) - tokens0
    busy = sample(mesh, "scheduler", "treadle_scheduler_trainer_busy_seconds_total") - busy0
    trainer_busy, flops = (
        sample(mesh, "trainer-0", name) - before
        for name, before in zip(names, trainer0, strict=True)
    )
    peak = sample(mesh, "trainer-0", "treadle_trainer_peak_flops")
    for tenant in tenants:
        tenant.stop.set()
    for tenant in tenants:
        tenant.join(timeout=120)
        tenant.client.close()
        if tenant.error is not None:
            raise tenant.error
    return {
        "tenants": n,
        "tokens_per_s": tokens / wall,
        "busy_fraction": busy / wall,
        "mfu_while_busy": flops / trainer_busy / peak if trainer_busy else 0.0,
        "window_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--datums", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--think-ms", type=float, default=50.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument(
        "--trainer-threads",
        type=int,
        default=0,
        help="the trainer's torch threads (0 = the launcher's default, the cores shared equally)",
    )
    args = parser.parse_args()
    if args.trainer_threads:
        torch.set_num_threads(args.trainer_threads)
    # the trainer's MFU denominator: measured here, as the other benchmarks measure it, rather
    # than in the seconds of the trainer's startup when the whole mesh is starting too
    peak = measure_matmul_peak(torch.device("cpu"), torch.float32, repeats=10)
    os.environ["TREADLE_TRAINER_PEAK_FLOPS"] = repr(peak)
    records = []
    with local_mesh(MODEL, max(args.tenants), args.trainer_threads) as (mesh, _):
        for n in args.tenants:
            records.append(measure(mesh, n, args))
            print(f"  {n} tenants: {records[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
    base = records[0]["tokens_per_s"]
    rows = [
        [r["tenants"], f"{r['tokens_per_s']:.0f}", f"{r['tokens_per_s'] / base:.2f}x",
         f"{100 * r['busy_fraction']:.0f}%", f"{100 * r['mfu_while_busy']:.1f}%"]
        for r in records
    ]  # fmt: skip
    print(
        f"{MODEL} on the CPU, one trainer; each tenant: {args.datums} datums x {args.tokens} "
        f"tokens per step, {args.think_ms:.0f} ms of client work between steps; "
        f"{args.window:.0f} s window after {args.warmup:.0f} s warm-up"
    )
    print(table(["tenants", "tokens/s", "vs 1 tenant", "trainer busy", "MFU while busy"], rows))
    monotone = all(b["tokens_per_s"] >= a["tokens_per_s"] for a, b in itertools.pairwise(records))
    payload = {
        "model": MODEL,
        "datums_per_step": args.datums,
        "tokens_per_datum": args.tokens,
        "think_ms": args.think_ms,
        "trainer_torch_threads": args.trainer_threads or "default",
        "peak_flops": peak,
        "results": records,
        "tokens_per_s_never_falls": monotone,
    }
    suffix = f"_{args.trainer_threads}thread" if args.trainer_threads else ""
    print(f"wrote {write_results('trainer_utilization' + suffix, payload)}")


if __name__ == "__main__":
    main()
