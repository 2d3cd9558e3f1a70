"""keep_freed_memory: a process that keeps allocating and freeing buffers of a few sizes, as the
checkpoints service does with a checkpoint's pieces, pays far fewer page faults for them."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import resource, sys
import numpy as np
from treadle_runtime.memory import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def pieces(i):  # two live buffers of 8, 16 or 24 MiB
    a, b = np.ones((1 + i % 3) << 20), np.ones((1 + (i + 1) % 3) << 20)
    return a.sum() + b.sum()
for i in range(3):
    pieces(i)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(30):
    pieces(i)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_reused_buffers_fault_far_less() -> None:
    default, tuned = faults("default"), faults("tuned")
    assert tuned < default / 2, (default, tuned)
