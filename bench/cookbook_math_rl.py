"""math_rl end to end on SmolLM2-135M-Instruct: held-out arithmetic accuracy before and after RL.

A fresh local mesh (unless --base-url), a fresh LoRA adapter, the math_rl recipe's defaults
unless overridden (addition with operands 0..19, the 69 held-out problems never
trained on, answered greedily), one run per seed. Prints a table and writes
results/cookbook_math_rl.json. Any math_rl flag can be passed through:

    .venv/bin/python bench/cookbook_math_rl.py
    .venv/bin/python bench/cookbook_math_rl.py --seeds 0,1 -- --steps 12 --mode async
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cookbook_common import mesh_for, table, write_results

from treadle_cookbook.recipes import math_rl

DEFAULTS: list[str] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("recipe_args", nargs="*", help="math_rl flags (after --)")
    args = parser.parse_args()
    started = time.monotonic()
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        recipe = math_rl.build_parser().parse_args(
            [
                *DEFAULTS,
                "--log-dir",
                f"runs/bench_math_rl/seed{seed}",
                "--seed",
                str(seed),
                *args.recipe_args,
            ]
        )
        with mesh_for(recipe) as (service, startup_s):
            report = math_rl.run(service, recipe)
        report["mesh_startup_s"] = round(startup_s, 1)
        runs.append(report)
        math_rl.print_report(report)

    rows = [
        [
            r["seed"],
            r["steps"],
            r["held_out_problems"],
            round(r["before"]["test/correct"], 3),
            round(r["after"]["test/correct"], 3),
            round(r["after"]["test/correct"] - r["before"]["test/correct"], 3),
            round(r["before"]["test/format"], 3),
            round(r["after"]["test/format"], 3),
            r["mesh_startup_s"],
            r["seconds"],
        ]
        for r in runs
    ]
    headers = [
        "seed",
        "steps",
        "held-out problems",
        "accuracy before",
        "accuracy after",
        "gain",
        "format before",
        "format after",
        "mesh start s",
        "run s",
    ]
    print(table(headers, rows))
    config = vars(math_rl.build_parser().parse_args([*DEFAULTS, *args.recipe_args]))
    config.pop("api_key", None)
    path = write_results(
        "cookbook_math_rl",
        {
            "model": config["base_model"],
            "config": config,
            "runs": runs,
            "table": {"headers": headers, "rows": rows},
            "total_s": round(time.monotonic() - started, 1),
            "load_average_at_end": list(os.getloadavg()),
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
