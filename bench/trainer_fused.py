"""Fused wave versus one tenant after another, on the trainer engine in process.

N tenants (N = 1, 2, 4, 8), each with its own rank-8 adapter and a batch of 2 datums × 64
tokens. One training step of all tenants runs either as one fused wave (a single batched
forward/backward over every tenant's rows, then each tenant's optim_step) or tenant by tenant
(forward_backward then optim_step, N times). Both variants are timed interleaved in the same
run; speedup = sequential / fused within each round, median over rounds (≥ 1 means fusing never
costs). MFU = model FLOPs (see treadle_trainer.flops) / median seconds / the matmul peak measured
in this run.

    python bench/trainer_fused.py            # CPU: treadle/tiny-llama, float32, N = 1 2 4 8
    python bench/trainer_fused.py --gpu      # CUDA: SmolLM2-135M-Instruct, bfloat16, N = 8
"""

from __future__ import annotations

import argparse
import time

import torch
from common import (
    interleaved,
    median,
    next_token_datums,
    paired_ratio,
    sync,
    table,
    write_results,
)

from treadle.contract.losses import CROSS_ENTROPY
from treadle.v1 import common_pb2
from treadle_models.lora import LoraSpec
from treadle_models.sources import SMOLLM2
from treadle_trainer.engine import TrainerEngine
from treadle_trainer.flops import measure_matmul_peak
from treadle_trainer.inputs import LossBatch, parse_forward_backward
from treadle_trainer.optim import AdamConfig

ADAM = AdamConfig(learning_rate=1e-4)


def _batches(engine: TrainerEngine, tenants: int, datums: int, tokens: int) -> list[LossBatch]:
    return [
        parse_forward_backward(
            common_pb2.ForwardBackwardRequest(
                data=next_token_datums(datums, tokens, seed=i, vocab=engine.spec.vocab_size),
                loss_fn=CROSS_ENTROPY,
            ),
            engine.spec.vocab_size,
            engine.spec.max_seq_len,
        )
        for i in range(tenants)
    ]


def run(args: argparse.Namespace) -> dict:
    engine = TrainerEngine(
        args.model, device=args.device, dtype=args.dtype, max_pass_tokens=1 << 20
    )
    peak = measure_matmul_peak(engine.device, engine.bank.dtype, repeats=10)
    top = max(args.tenants)
    ids = [f"tenant-{i}" for i in range(top)]
    for i, model_id in enumerate(ids):
        engine.create_adapter(model_id, "bench", LoraSpec(rank=args.rank), seed=i)
    batches = _batches(engine, top, args.datums, args.tokens)
    rows, records = [], []
    for n in args.tenants:
        ops = list(zip(ids[:n], batches[:n], strict=True))
        fb_seconds: dict[str, list[float]] = {"fused": [], "sequential": []}

        def fused(ops=ops, fb=fb_seconds["fused"]) -> None:
            started = time.perf_counter()
            engine.forward_backward(ops)
            sync()
            fb.append(time.perf_counter() - started)
            for model_id, _ in ops:
                engine.optim_step(model_id, ADAM)

        def sequential(ops=ops, fb=fb_seconds["sequential"]) -> None:
            spent = 0.0
            for op in ops:
                started = time.perf_counter()
                engine.forward_backward([op])
                sync()
                spent += time.perf_counter() - started
                engine.optim_step(op[0], ADAM)
            fb.append(spent)

        before = engine.flops_total
        engine.forward_backward(ops)  # one untimed pass to count its FLOPs
        flops = engine.flops_total - before
        times = interleaved({"fused": fused, "sequential": sequential}, rounds=args.rounds)
        t_fused, t_seq = median(times["fused"]), median(times["sequential"])
        fb_fused, fb_seq = fb_seconds["fused"][1:], fb_seconds["sequential"][1:]  # not warm-up
        record = {
            "tenants": n,
            "tokens": n * args.datums * args.tokens,
            "sequential_s": t_seq,
            "fused_s": t_fused,
            "speedup": paired_ratio(times["sequential"], times["fused"]),
            "forward_backward_speedup": paired_ratio(fb_seq, fb_fused),
            "min_sequential_s": min(times["sequential"]),
            "min_fused_s": min(times["fused"]),
            "mfu_sequential": flops / t_seq / peak,
            "mfu_fused": flops / t_fused / peak,
            "model_flops_per_step": flops,
            "rounds": times,
        }
        records.append(record)
        rows.append(
            [n, record["tokens"], t_seq, t_fused, f"{record['speedup']:.2f}x",
             f"{record['forward_backward_speedup']:.2f}x",
             f"{100 * record['mfu_sequential']:.1f}%", f"{100 * record['mfu_fused']:.1f}%"]
        )  # fmt: skip
    print(
        f"{args.model} on {engine.device} ({engine.bank.dtype}), {args.datums} datums x "
        f"{args.tokens} tokens per tenant, rank {args.rank}, matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s, median of {args.rounds} interleaved rounds"
    )
    print(
        table(
            ["tenants", "tokens", "one after another (s)", "fused wave (s)", "speedup",
             "speedup (fwd+bwd only)", "MFU one after another", "MFU fused"],
            rows,
        )
    )  # fmt: skip
    return {
        "model": args.model,
        "device": str(engine.device),
        "dtype": str(engine.bank.dtype),
        "grouped_gemm": engine.bank.stacked,
        "datums_per_tenant": args.datums,
        "tokens_per_datum": args.tokens,
        "rank": args.rank,
        "peak_flops": peak,
        "results": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="SmolLM2 in bfloat16 on CUDA, N = 8")
    parser.add_argument("--model", default="")
    parser.add_argument("--tenants", type=int, nargs="+", default=None)
    parser.add_argument("--datums", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device, args.dtype = ("cuda", "bfloat16") if args.gpu else ("cpu", "float32")
    args.model = args.model or (SMOLLM2 if args.gpu else "treadle/tiny-llama")
    args.tenants = args.tenants or ([8] if args.gpu else [1, 2, 4, 8])
    args.rounds = args.rounds or (20 if args.gpu else 7)
    payload = run(args)
    name = "trainer_fused_gpu" if args.gpu else "trainer_fused"
    path = write_results(name + (f"_{args.threads}thread" if args.threads else ""), payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
