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
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import machine, table, write_results

import treadle
from treadle_cookbook.recipes import connect

__all__ = ["machine", "mesh_for", "table", "write_results"]


@contextmanager
def mesh_for(args: argparse.Namespace) -> Iterator[tuple[treadle.ServiceClient, float]]:
    """A client on the mesh the recipe flags name (a fresh local one by default), and the
    seconds it took to start."""
    args.local = not args.base_url
    started = time.monotonic()
    with connect(args, args.base_model) as service:
        yield service, time.monotonic() - started
