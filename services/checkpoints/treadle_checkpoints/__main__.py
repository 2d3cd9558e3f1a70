"""Entry point: `treadle-checkpoints` (or `python -m treadle_checkpoints`).

The process first asks glibc to keep freed memory for reuse: every piece of a checkpoint passes
through short-lived buffers (S3 reads, protobuf messages, gRPC slices, multipart parts), and by
default glibc hands large freed blocks straight back to the kernel, so the next piece lands on
fresh pages and pays a page fault per 4 KiB. Profiled, those faults were the largest single cost
of a load or save; keeping up to `_RETAIN_BYTES` of freed memory removes them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence

from treadle_checkpoints.app import CheckpointsApp
from treadle_checkpoints.config import CheckpointsConfig
from treadle_runtime.config import load_config_or_exit
from treadle_runtime.server import run_server

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_BYTES = 32 << 20  # blocks up to this size come from the heap (glibc's largest setting)
_RETAIN_BYTES = 256 << 20  # freed heap memory kept before any is returned


def keep_freed_memory() -> bool:
    """Tune glibc's allocator as the module doc says; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES) and mallopt(_M_TRIM_THRESHOLD, _RETAIN_BYTES)
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the checkpoints service until SIGTERM/SIGINT."""
    config = load_config_or_exit(CheckpointsConfig, service="checkpoints", argv=argv)
    keep_freed_memory()
    app = CheckpointsApp(config)
    run_server(config, "checkpoints", app.setup, on_shutdown=app.close)


if __name__ == "__main__":
    main()
