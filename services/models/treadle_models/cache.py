"""The model cache on disk: folders built once, however many processes ask for them at once.

A cached folder is complete only when it holds the marker file, written last into the temporary
folder before the rename that publishes it; anything else at the target (a half-written folder,
one from a release before the marker) is never used and is rebuilt. A builder takes an exclusive
lock on `<target>.lock` and looks again once it holds it, so concurrent processes convert once and
the others wait and use the result; a process that still loses the rename (to one that does not
lock) uses the winner's folder. `<target>.tmp<pid>` folders whose process has died are removed
under the lock.

This module imports neither torch nor transformers: a launcher checks a warm cache in a blink.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

MARKER = ".treadle-complete"
FORMAT = "1"  # bump when a folder's contents change: older folders are then rebuilt
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """Folder for converted models ($TREADLE_CACHE_DIR, default ~/.cache/treadle)."""
    return Path(os.environ.get("TREADLE_CACHE_DIR", Path.home() / ".cache" / "treadle"))


def model_folder(name: str) -> Path:
    """Where the cached folder called `name` lives (built or not)."""
    return cache_dir() / "models" / name


def is_complete(folder: Path) -> bool:
    """Whether `folder` was published whole by `cached_folder` in the current format."""
    try:
        return (folder / MARKER).read_text().strip() == FORMAT
    except (FileNotFoundError, NotADirectoryError):
        return False


def cached_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, built first by `build(folder)` (which fills an empty folder) unless complete."""
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if is_complete(target):  # built by another process while this one waited
            return target
        _remove_leftovers(target)
        partial = target.with_name(f"{target.name}.tmp{os.getpid()}")
        partial.mkdir()
        try:
            build(partial)
            (partial / MARKER).write_text(FORMAT + "\n")
            _publish(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # gone already once published
    return target


def _publish(partial: Path, target: Path) -> None:
    """Rename `partial` to `target` (atomic), replacing an incomplete folder; a complete one put
    there meanwhile by a process that does not lock wins, and `partial` is dropped."""
    if target.exists() and not is_complete(target):
        shutil.rmtree(target)
    try:
        partial.rename(target)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not is_complete(target):
            raise


def _remove_leftovers(target: Path) -> None:
    """Remove the temporary folders of processes that died while building `target`."""
    for leftover in target.parent.glob(f"{target.name}.tmp*"):
        pid = leftover.name.rpartition(".tmp")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
