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
import sys
import time

from cookbook_common import finish, run_seeds

from treadle_cookbook.recipes import math_rl


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("recipe_args", nargs="*", help="math_rl flags (after --)")
    args = parser.parse_args()
    started = time.monotonic()
    runs = run_seeds(math_rl, "math_rl", args.seeds, args.recipe_args)
    headers = ["seed", "steps", "held-out problems", "accuracy before", "accuracy after"]
    headers += ["gain", "format before", "format after", "mesh start s", "run s"]
    rows = []
    for r in runs:
        before, after = r["before"]["test/correct"], r["after"]["test/correct"]
        formats = [round(r[w]["test/format"], 3) for w in ("before", "after")]
        counts = [r["seed"], r["steps"], r["held_out_problems"]]
        accuracy = [round(before, 3), round(after, 3), round(after - before, 3)]
        rows.append([*counts, *accuracy, *formats, r["mesh_startup_s"], r["seconds"]])
    config = math_rl.build_parser().parse_args(args.recipe_args)
    finish("cookbook_math_rl", config, runs, headers, rows, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
