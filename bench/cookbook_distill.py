"""Distillation end to end on SmolLM2-135M-Instruct: held-out reverse KL(student || teacher) per
token before and after, on-policy and off-policy, against the same teacher.

The teacher is a LoRA adapter trained first for a few SFT steps on the shipped chat set (a terse
house style SmolLM2 does not have); each student is a fresh adapter on the same base, so it
starts as the base model. Both methods see the same training prompts and are scored on the
same held-out prompts (samples seeded). Prints a table and writes results/cookbook_distill.json.

    .venv/bin/python bench/cookbook_distill.py
    .venv/bin/python bench/cookbook_distill.py -- --steps 12 --max-tokens 24
"""

from __future__ import annotations

import argparse
import sys
import time

from cookbook_common import finish, mesh_for

from treadle_cookbook.recipes import distill
from treadle_cookbook.renderers import get_renderer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="on_policy,off_policy")
    parser.add_argument("recipe_args", nargs="*", help="distill flags (after --)")
    args = parser.parse_args()
    started = time.monotonic()
    base = distill.build_parser().parse_args(args.recipe_args)
    runs = []
    with mesh_for(base) as (service, startup_s):
        if not (base.teacher_checkpoint or base.teacher_base_model):
            base.log_dir = "runs/bench_distill"
            renderer = get_renderer(base.renderer, service.get_tokenizer(base.base_model))
            _, described = distill.make_teacher(service, base, renderer)
            base.teacher_checkpoint = described.rsplit(": ", 1)[1]
        for method in args.methods.split(","):
            recipe = distill.build_parser().parse_args(
                [
                    *args.recipe_args,
                    "--method",
                    method,
                    "--log-dir",
                    f"runs/bench_distill/{method}",
                    "--teacher-checkpoint",
                    base.teacher_checkpoint,
                ]
            )
            report = distill.run(service, recipe)
            report["mesh_startup_s"] = round(startup_s, 1)
            runs.append(report)
            distill.print_report(report)

    headers = ["method", "steps", "held-out prompts x samples", "reverse KL before"]
    headers += ["reverse KL after", "after / before", "run s"]
    rows = []
    for r in runs:
        before = r["before"]["test/reverse_kl"]
        after = r["after"]["test/reverse_kl"]
        rows.append(
            [
                r["method"],
                r["steps"],
                f"{r['held_out_prompts']} x {r['samples_per_prompt']}",
                round(before, 4),
                round(after, 4),
                round(after / before, 3),
                r["seconds"],
            ]
        )
    finish("cookbook_distill", base, runs, headers, rows, started, teacher=base.teacher_checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
