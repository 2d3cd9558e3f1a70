"""`treadle up`'s sharing of the machine's cores (a model's trainers share its part of the cores,
its samplers half of that, unless one thread count is given for both), the models prepared
before any service starts (said on stdout; a failure or a timeout said plainly), and services that
never outlive their launcher."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from treadle_models.cache import FORMAT, MARKER, SMOLLM2_FOLDER
from treadle_runtime.launcher import LocalMesh, UpConfig, prepare_models
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


def test_a_bad_prepare_timeout_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^prepare_timeout: must be > 0"):
        UpConfig(prepare_timeout=0).validate()


def test_preparing_says_so_and_is_quick_on_a_warm_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models" / SMOLLM2_FOLDER
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(FORMAT)
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path))
    started = time.monotonic()
    prepare_models(["treadle/tiny-llama", "treadle/tiny-qwen2"], timeout=60)
    assert time.monotonic() - started < 10  # no torch: about a tenth of a second
    assert capsys.readouterr().out.splitlines() == [
        "preparing model treadle/tiny-llama ...",
        "preparing model treadle/tiny-qwen2 ...",
    ]


def test_a_preparation_that_takes_too_long_is_stopped_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path))  # cold: a conversion would start
    with pytest.raises(RuntimeError, match=r"took longer than 0.5s \(prepare_timeout\)"):
        prepare_models(["treadle/tiny-llama"], timeout=0.5)
    assert not (tmp_path / "models" / SMOLLM2_FOLDER).exists()


def test_a_failed_preparation_stops_the_start_before_any_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path / "cache"))
    mesh = LocalMesh(UpConfig(base_model="nobody/no-such-model", data_dir=str(tmp_path)))
    with pytest.raises(RuntimeError) as failed:
        mesh.start()
    first, reason = str(failed.value).splitlines()[:2]
    assert first == "preparing nobody/no-such-model failed:"
    assert reason.startswith("prepare: base_model 'nobody/no-such-model' is not served here")
    assert mesh.services == [] and mesh.s3 is None


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
