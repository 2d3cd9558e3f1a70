"""`treadle up`'s sharing of the machine's cores (a model's trainers share its part of the cores,
its samplers half of that, unless one thread count is given for both), and services that never
outlive their launcher."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from treadle_runtime.launcher import LocalMesh, UpConfig
from treadle_runtime.lifetime import LAUNCHER_PID


def test_the_cores_are_shared_among_the_workers() -> None:
    cores = len(os.sched_getaffinity(0))
    assert UpConfig().worker_threads() == (cores, max(1, cores // 2))
    two_models = UpConfig(base_model="a,b", trainers=2, samplers=2)
    assert two_models.worker_threads() == (max(1, cores // 4), max(1, cores // 8))
    assert UpConfig(torch_threads=3).worker_threads() == (3, 3)


def test_negative_threads_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^torch_threads: must be >= 0"):
        UpConfig(torch_threads=-1).validate()


def test_the_running_workers_got_their_share(mesh: LocalMesh) -> None:
    shares = mesh.config.worker_threads()
    for name, share in zip(("trainer-0", "sampler-0"), shares, strict=True):
        command = mesh.service(name).command
        assert command[command.index("--torch-threads") + 1] == str(share)


_SERVICE = (
    "from treadle_runtime.lifetime import die_with_launcher; die_with_launcher(); "
    "print('up', flush=True); import time; time.sleep(120)"
)
_LAUNCHER = (
    "import sys; from pathlib import Path; from treadle_runtime.launcher import _launch; "
    f"p = _launch([sys.executable, '-c', {_SERVICE!r}], Path(sys.argv[1])); "
    "print(p.pid, flush=True); p.wait()"
)


def test_a_service_dies_with_a_launcher_killed_outright(tmp_path: Path) -> None:
    """SIGKILL gives the launcher no chance to stop its children: the kernel does (SIGTERM)."""
    log = tmp_path / "service.log"
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(log)], stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    child = int(launcher.stdout.readline())
    deadline = time.monotonic() + 60
    while "up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "up" in log.read_text(), "the service never started"
    launcher.kill()
    launcher.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child), "the service outlived its launcher"


def test_a_service_whose_launcher_is_already_gone_stops_at_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SERVICE],
        env={**os.environ, LAUNCHER_PID: "1"},  # not this process's parent: gone already
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "up" not in done.stdout


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
