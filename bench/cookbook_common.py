"""What the cookbook benchmarks share: a mesh for a recipe (started here unless --base-url is
given), wall-clock timing, and the results file.

The cookbook benchmarks are learning runs, not speed races: each runs one recipe end to end on
SmolLM2-135M-Instruct and reports the quality number before and after training, with the exact
configuration (problems, pairs, prompts, seeds, steps) next to it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import machine, table, write_results

import treadle
from treadle_cookbook.recipes import connect

__all__ = ["finish", "machine", "mesh_for", "run_seeds", "table", "write_results"]


@contextmanager
def mesh_for(args: argparse.Namespace) -> Iterator[tuple[treadle.ServiceClient, float]]:
    """A client on the mesh the recipe flags name (a fresh local one by default), and the
    seconds it took to start."""
    args.local = not args.base_url
    started = time.monotonic()
    with connect(args, args.base_model) as service:
        yield service, time.monotonic() - started


def run_seeds(
    recipe: ModuleType, name: str, seeds: str, recipe_args: Sequence[str]
) -> list[dict[str, Any]]:
    """One run of `recipe` per seed, each on a fresh mesh, logging to runs/bench_<name>/seed<N>;
    the reports, each with its mesh's startup time."""
    runs = []
    for seed in [int(s) for s in seeds.split(",")]:
        log_dir = f"runs/bench_{name}/seed{seed}"
        args = recipe.build_parser().parse_args(
            ["--log-dir", log_dir, "--seed", str(seed), *recipe_args]
        )
        with mesh_for(args) as (service, startup_s):
            report = recipe.run(service, args)
        report["mesh_startup_s"] = round(startup_s, 1)
        runs.append(report)
        recipe.print_report(report)
    return runs


def finish(
    name: str,
    config: argparse.Namespace,
    runs: list[dict[str, Any]],
    headers: list[str],
    rows: list[list[Any]],
    started: float,
    **extra: Any,
) -> None:
    """Print the table and write results/<name>.json with the exact configuration (no key)."""
    print(table(headers, rows))
    settings = dict(vars(config))
    settings.pop("api_key", None)
    path = write_results(
        name,
        {
            "model": settings["base_model"],
            **extra,
            "config": settings,
            "runs": runs,
            "table": {"headers": headers, "rows": rows},
            "total_s": round(time.monotonic() - started, 1),
            "load_average_at_end": list(os.getloadavg()),
        },
    )
    print(f"results: {path}")
