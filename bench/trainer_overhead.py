"""The trainer engine against the self-hosted baseline: the same single-tenant batch trained by
a plain in-process PEFT loop (forward, loss, backward, AdamW) and by the trainer engine called in
process (forward_backward, optim_step). Both start from the same adapter (the engine's
initialisation is peft's) and take the same steps on the same data, so their losses must agree;
their step times are timed interleaved in the same run, and the ratio is the median over rounds
of engine / plain within a round. Target: engine ≤ 1.10× the plain loop.

    python bench/trainer_overhead.py                   # tiny-llama, 8 datums x 128 tokens
    python bench/trainer_overhead.py --model HuggingFaceTB/SmolLM2-135M-Instruct --rounds 3
"""

from __future__ import annotations

import argparse

import torch
from common import (
    PlainPeftLoop,
    as_tensors,
    interleaved,
    median,
    next_token_datums,
    paired_ratio,
    table,
    write_results,
)

from treadle.v1 import common_pb2
from treadle_models.lora import LoraSpec
from treadle_trainer.engine import TrainerEngine
from treadle_trainer.flops import measure_matmul_peak
from treadle_trainer.inputs import parse_forward_backward
from treadle_trainer.optim import AdamConfig


def compare(args: argparse.Namespace) -> dict:
    """Time both loops side by side; returns the record written to results."""
    engine = TrainerEngine(
        args.model, device=args.device, dtype=args.dtype, max_pass_tokens=1 << 20
    )
    engine.create_adapter("tenant", "bench", LoraSpec(rank=args.rank), seed=args.seed)
    plain = PlainPeftLoop(args.model, args.rank, args.seed, args.device, args.dtype)
    datums = next_token_datums(args.datums, args.tokens, seed=1, vocab=engine.spec.vocab_size)
    request = common_pb2.ForwardBackwardRequest(data=datums, loss_fn="cross_entropy")
    batch = parse_forward_backward(request, engine.spec.vocab_size, engine.spec.max_seq_len)
    input_ids, targets = as_tensors(datums, args.device)
    adam = AdamConfig(learning_rate=1e-4)
    losses: dict[str, list[float]] = {"plain PEFT loop": [], "trainer engine": []}

    def engine_step() -> None:
        (result,) = engine.forward_backward([("tenant", batch)])
        engine.optim_step("tenant", adam)
        losses["trainer engine"].append(result.metrics["loss:sum"])  # type: ignore[union-attr]

    def plain_step() -> None:
        losses["plain PEFT loop"].append(plain.step(input_ids, targets))

    peak = measure_matmul_peak(engine.device, engine.bank.dtype, repeats=10)
    before = engine.flops_total
    engine.forward_backward([("tenant", batch)])  # counts the FLOPs (gradient is cleared below)
    flops = engine.flops_total - before
    for param in engine.adapters["tenant"].params.values():
        param.grad = None
    times = interleaved({"plain PEFT loop": plain_step, "trainer engine": engine_step},
                        rounds=args.rounds)  # fmt: skip
    agree = max(
        abs(a - b) / abs(b)
        for a, b in zip(losses["trainer engine"], losses["plain PEFT loop"], strict=True)
    )
    t_plain, t_engine = median(times["plain PEFT loop"]), median(times["trainer engine"])
    return {
        "model": args.model,
        "device": str(engine.device),
        "dtype": str(engine.bank.dtype),
        "datums": args.datums,
        "tokens_per_datum": args.tokens,
        "rank": args.rank,
        "peak_flops": peak,
        "model_flops_per_step": flops,
        "plain_s": t_plain,
        "engine_s": t_engine,
        "engine_over_plain": paired_ratio(times["trainer engine"], times["plain PEFT loop"]),
        "mfu_plain": flops / t_plain / peak,
        "mfu_engine": flops / t_engine / peak,
        "max_relative_loss_difference": agree,
        "rounds": times,
        "losses": losses,
    }


def report(record: dict, rounds: int) -> None:
    """Print the table of one comparison."""
    print(
        f"{record['model']} on {record['device']} ({record['dtype']}), {record['datums']} datums"
        f" x {record['tokens_per_datum']} tokens, rank {record['rank']}, matmul peak "
        f"{record['peak_flops'] / 1e9:.1f} GFLOP/s, median of {rounds} interleaved rounds; "
        f"losses agree to {record['max_relative_loss_difference']:.1e} (relative)"
    )
    rows = [
        ["plain PEFT loop", record["plain_s"], "1.00x", f"{100 * record['mfu_plain']:.1f}%"],
        ["trainer engine", record["engine_s"], f"{record['engine_over_plain']:.2f}x",
         f"{100 * record['mfu_engine']:.1f}%"],
    ]  # fmt: skip
    print(table(["loop", "step (s)", "time vs plain", "MFU"], rows))


def arguments(model: str, datums: int, tokens: int, rounds: int) -> argparse.Namespace:
    """Command-line arguments with the given defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=model)
    parser.add_argument("--datums", type=int, default=datums)
    parser.add_argument("--tokens", type=int, default=tokens)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = arguments("treadle/tiny-llama", datums=8, tokens=128, rounds=9)
    record = compare(args)
    report(record, args.rounds)
    suffix = f"_{args.threads}thread" if args.threads else ""
    print(f"wrote {write_results('trainer_overhead' + suffix, record)}")


if __name__ == "__main__":
    main()
