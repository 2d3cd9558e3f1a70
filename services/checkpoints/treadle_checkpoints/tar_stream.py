"""A tar archive written as a stream: each member's header, its bytes, zero padding to 512, and
two zero blocks at the end. Sizes are known from the manifest before any data is read, so the
archive's total length is known up front (Export sends it with the first chunk)."""

from __future__ import annotations

import tarfile

BLOCK = 512
END = bytes(2 * BLOCK)


def member_header(name: str, size: int, mtime: float) -> bytes:
    """The header block(s) of a regular file `name` of `size` bytes (PAX when a name needs it)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    """Zeros that complete a member of `size` bytes to a whole block."""
    return bytes(-size % BLOCK)


def archive_size(members: list[tuple[str, int]], mtime: float) -> int:
    """Exact length of the archive of `members` ((name, size) pairs)."""
    total = len(END)
    for name, size in members:
        total += len(member_header(name, size, mtime)) + size + len(padding(size))
    return total
