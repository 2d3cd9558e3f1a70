"""The model cache builds a folder once and never hands out a partial one: a folder without the
current marker (half-written, or from before the marker) is rebuilt; a failed build leaves
nothing; a second builder waits for the first and uses its folder; a rename lost to a process
that does not lock uses the winner's folder; temporary folders of dead processes are removed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from treadle_models.cache import FORMAT, MARKER, cached_folder, is_complete


class Builder:
    """A build function that writes one file and counts its calls."""

    def __init__(self, content: str = "built") -> None:
        self.content = content
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "weights.txt").write_text(self.content)


def test_a_folder_is_built_once_then_used(tmp_path: Path) -> None:
    target, build = tmp_path / "model", Builder()
    assert cached_folder(target, build) == target
    assert cached_folder(target, build) == target
    assert build.calls == 1
    assert (target / "weights.txt").read_text() == "built" and is_complete(target)
    assert (target / MARKER).read_text().strip() == FORMAT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.lock"]


@pytest.mark.parametrize(
    "marker",
    [None, "0\n"],
    ids=["half-written or from before the marker", "an older format"],
)
def test_a_folder_without_the_current_marker_is_rebuilt_not_used(
    tmp_path: Path, marker: str | None
) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "weights.txt").write_text("truncated")
    if marker is not None:
        (target / MARKER).write_text(marker)
    assert not is_complete(target)
    build = Builder()
    cached_folder(target, build)
    assert build.calls == 1
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "weights.txt"]
    assert (target / "weights.txt").read_text() == "built"


def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def broken(folder: Path) -> None:
        (folder / "weights.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cached_folder(target, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.lock"]
    build = Builder()
    cached_folder(target, build)
    assert build.calls == 1 and is_complete(target)


def test_a_second_builder_waits_for_the_first_and_uses_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    building, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow(folder: Path) -> None:
        calls.append("first")
        building.set()
        release.wait(timeout=30)
        (folder / "weights.txt").write_text("first")

    def second(folder: Path) -> None:
        calls.append("second")

    first = threading.Thread(target=cached_folder, args=(target, slow))
    first.start()
    assert building.wait(timeout=30)
    got: list[Path] = []
    waiter = threading.Thread(target=lambda: got.append(cached_folder(target, second)))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive(), "the second builder did not wait for the lock"
    release.set()
    first.join(timeout=30)
    waiter.join(timeout=30)
    assert calls == ["first"] and got == [target]
    assert (target / "weights.txt").read_text() == "first"


def test_a_rename_lost_to_a_process_that_does_not_lock_uses_the_winners_folder(
    tmp_path: Path,
) -> None:
    target = tmp_path / "model"

    def raced(folder: Path) -> None:
        (folder / "weights.txt").write_text("mine")
        target.mkdir()  # a rival that takes no lock publishes its folder meanwhile
        (target / "weights.txt").write_text("theirs")
        (target / MARKER).write_text(FORMAT)

    assert cached_folder(target, raced) == target
    assert (target / "weights.txt").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.lock"]


def test_leftovers_of_dead_processes_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"model.tmp{gone.pid}"
    live = tmp_path / f"model.tmp{os.getppid()}"  # a builder that does not lock, still at work
    for folder in (dead, live):
        folder.mkdir()
        (folder / "weights.txt").write_text("partial")
    cached_folder(tmp_path / "model", Builder())
    assert not dead.exists() and live.exists()
