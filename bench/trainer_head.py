"""The unembedding sweep's wide products on torch.mm versus oneDNN, on the CPU, in process.

The shapes of one 128-row chunk of bench/sdk_step_time.py's step (tiny-llama: hidden 128,
vocabulary 49152, the rank-8 lm_head LoRA folded in, so K = 136): the logits [128 × 136] ·
[136 × 49152], their input gradient [128 × 49152] · [49152 × 136], and the lm_head B gradient
[8 × 128] · [128 × 49152]. Then the whole sweep (`unembed`, 4 × 64 rows, two chunks) with each
backend. Variants run interleaved round by round; speedup = torch.mm time / oneDNN time within a
round, median over rounds.

    python bench/trainer_head.py [--threads N] [--rounds R]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import interleaved, median, paired_ratio, table, write_results

from treadle_trainer import head
from treadle_trainer.head import HeadSegment, StackedHead, unembed

ROWS, HIDDEN, RANK, VOCAB = 128, 128, 8, 49152


def _repeat(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def _sweep(onednn: bool, *inputs: object) -> Callable[[], object]:
    linear = head._ONEDNN_LINEAR

    def run() -> object:
        head._ONEDNN_LINEAR = linear if onednn else None
        try:
            return unembed(*inputs)  # type: ignore[arg-type]
        finally:
            head._ONEDNN_LINEAR = linear

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if head._ONEDNN_LINEAR is None:
        raise SystemExit("this torch build has no oneDNN linear")
    onednn = head._ONEDNN_LINEAR
    g = torch.Generator().manual_seed(0)
    k = HIDDEN + RANK
    x = torch.randn(ROWS, k, generator=g)
    stacked_KV = torch.randn(k, VOCAB, generator=g) / 10  # [Wᵀ; Bᵀ] as StackedHead keeps it
    dz = torch.randn(ROWS, VOCAB, generator=g) / VOCAB
    xa_T = torch.randn(RANK, ROWS, generator=g)

    def dnnl(a: torch.Tensor, w: torch.Tensor) -> Callable[[], object]:
        return lambda: onednn(a, w, None, "none", [], "")

    products = {
        "logits [128×136]·[136×49152]": (
            lambda: torch.mm(x, stacked_KV),
            dnnl(x, stacked_KV.t()),
        ),
        "input gradient [128×49152]·[49152×136]": (
            lambda: torch.mm(dz, stacked_KV.t()),
            dnnl(dz, stacked_KV),
        ),
        "lm_head B gradient [8×128]·[128×49152]": (
            lambda: torch.mm(xa_T, dz),
            dnnl(xa_T, dz.t()),
        ),
    }
    rows, results = [], {}
    for name, (mm, dn) in products.items():
        times = interleaved({"mm": _repeat(mm, 5), "onednn": _repeat(dn, 5)}, args.rounds)
        mm_ms, dn_ms = median(times["mm"]) / 5 * 1e3, median(times["onednn"]) / 5 * 1e3
        speedup = paired_ratio(times["mm"], times["onednn"])
        rows.append([name, f"{mm_ms:.2f}", f"{dn_ms:.2f}", f"{speedup:.2f}×"])
        results[name] = {"torch_mm_ms": mm_ms, "onednn_ms": dn_ms, "speedup": speedup}

    hidden = torch.randn(2 * ROWS, HIDDEN, generator=g)
    weight = torch.randn(VOCAB, HIDDEN, generator=g) / 10
    lora = (torch.randn(RANK, HIDDEN, generator=g) / 10, torch.randn(RANK, VOCAB, generator=g), 1.0)
    targets = torch.randint(0, VOCAB, (2 * ROWS,), generator=g)
    segment = HeadSegment(0, 2 * ROWS, lora, lambda lp, offset, n: -lp)
    inputs = (hidden, weight, targets, [segment], ROWS, StackedHead())
    times = interleaved(
        {"mm": _sweep(False, *inputs), "onednn": _sweep(True, *inputs)}, args.rounds
    )
    mm_ms, dn_ms = median(times["mm"]) * 1e3, median(times["onednn"]) * 1e3
    speedup = paired_ratio(times["mm"], times["onednn"])
    rows.append(
        ["whole sweep, 256 rows (unembed)", f"{mm_ms:.1f}", f"{dn_ms:.1f}", f"{speedup:.2f}×"]
    )
    results["sweep"] = {"torch_mm_ms": mm_ms, "onednn_ms": dn_ms, "speedup": speedup}

    print(f"\nHead products, float32, {args.threads} threads (median ms)")
    print(table(["product", "torch.mm", "oneDNN", "speedup"], rows))
    path = write_results(
        "trainer_head", {"threads": args.threads, "rounds": args.rounds, "results": results}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
