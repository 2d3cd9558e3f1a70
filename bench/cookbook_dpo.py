"""DPO end to end on SmolLM2-135M-Instruct: held-out preference accuracy before and after.

A fresh local mesh (unless --base-url), a fresh LoRA adapter whose initial weights are the frozen
reference, the shipped pairs (150 train, 48 held-out; they prefer terse correct answers, see
treadle_cookbook/preference/synthetic.py). Prints a table and writes results/cookbook_dpo.json.
Any dpo flag can be passed through:

    .venv/bin/python bench/cookbook_dpo.py
    .venv/bin/python bench/cookbook_dpo.py -- --epochs 2 --beta 0.2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cookbook_common import mesh_for, table, write_results

from treadle_cookbook.recipes import dpo

DEFAULTS: list[str] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("recipe_args", nargs="*", help="dpo flags (after --)")
    args = parser.parse_args()
    started = time.monotonic()
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        recipe = dpo.build_parser().parse_args(
            [
                *DEFAULTS,
                "--log-dir",
                f"runs/bench_dpo/seed{seed}",
                "--seed",
                str(seed),
                *args.recipe_args,
            ]
        )
        with mesh_for(recipe) as (service, startup_s):
            report = dpo.run(service, recipe)
        report["mesh_startup_s"] = round(startup_s, 1)
        runs.append(report)
        dpo.print_report(report)

    keys = ["test/pref_accuracy", "test/pref_accuracy/style", "test/pref_accuracy/correctness"]
    headers = ["seed", "steps", "held-out pairs"]
    headers += [f"{k.removeprefix('test/')} {w}" for k in keys for w in ("before", "after")]
    headers += ["run s"]
    rows = [
        [r["seed"], r["steps"], r["held_out_pairs"]]
        + [round(r[w].get(k, float("nan")), 3) for k in keys for w in ("before", "after")]
        + [r["seconds"]]
        for r in runs
    ]
    print(table(headers, rows))
    config = vars(dpo.build_parser().parse_args([*DEFAULTS, *args.recipe_args]))
    config.pop("api_key", None)
    path = write_results(
        "cookbook_dpo",
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
