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
import sys
import time

from cookbook_common import finish, run_seeds

from treadle_cookbook.recipes import dpo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("recipe_args", nargs="*", help="dpo flags (after --)")
    args = parser.parse_args()
    started = time.monotonic()
    runs = run_seeds(dpo, "dpo", args.seeds, args.recipe_args)
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
    config = dpo.build_parser().parse_args(args.recipe_args)
    finish("cookbook_dpo", config, runs, headers, rows, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
