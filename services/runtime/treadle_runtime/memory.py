"""Keep freed memory in the process for reuse (glibc's allocator).

The checkpoints service moves every checkpoint through short-lived buffers of varying sizes (S3
pieces, protobuf messages, gRPC slices, multipart parts). By default glibc serves large blocks
with fresh mmap()s and returns freed heap tops to the kernel, so the next piece lands on new pages
and pays a page fault per 4 KiB, the largest single cost of a checkpoint load. Raising both
thresholds keeps the memory for the next piece instead, at the price of holding on to up to
`retain_bytes` of freed memory. A trainer's passes reuse their memory without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_BYTES = 32 << 20  # blocks up to this size come from the heap (glibc's largest setting)


def keep_freed_memory(retain_bytes: int = 1 << 30) -> bool:
    """Tune glibc's allocator as the module doc says; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES) and mallopt(_M_TRIM_THRESHOLD, retain_bytes))
