"""MFU of the trainer engine on SmolLM2-135M at 8 datums × 128 tokens, against the float32 matmul
peak measured in the same run, with the plain in-process PEFT loop side by side for reference.
Target: engine ≥ 50 %. MFU counts the FLOPs the step needs (treadle_trainer.flops: a frozen base
needs input gradients only, 4·P per token, plus attention and LoRA), not 6·P per token.

    python bench/trainer_mfu.py                   # 3 interleaved rounds (about 2 minutes)
"""

from __future__ import annotations

from common import write_results
from trainer_overhead import arguments, compare, report

from treadle_models.sources import SMOLLM2


def main() -> None:
    args = arguments(SMOLLM2, datums=8, tokens=128, rounds=3)
    record = compare(args)
    report(record, args.rounds)
    suffix = f"_{args.threads}thread" if args.threads else ""
    print(f"wrote {write_results('trainer_mfu' + suffix, record)}")


if __name__ == "__main__":
    main()
