"""`treadle up`'s sharing of the machine's cores (a model's trainers share its part of the cores,
its vLLM samplers the same, torch-engine samplers half of that, unless one thread count is given
for both), its list of served models (NAME=SOURCE entries; a bad list is a one-line config error
naming base_model), the models prepared before any service starts (said on stdout; a failure or a
timeout said plainly), the tokenizers written for clients under their served names, and services
that never outlive their launcher."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from treadle_models.cache import FORMAT, MARKER, SMOLLM2_FOLDER
from treadle_models.served import ServedModel
from treadle_runtime.config import ConfigError, load_config
from treadle_runtime.launcher import LocalMesh, UpConfig, prepare_models, write_hub_cache
from treadle_runtime.lifetime import LAUNCHER_PID

LLAMA = "meta-llama/Llama-3.2-1B"


def test_the_cores_are_shared_among_the_workers() -> None:
    cores = len(os.sched_getaffinity(0))
    assert UpConfig().worker_threads() == (cores, cores)  # vLLM samplers: the trainers' share
    assert UpConfig(sampler_engine="torch").worker_threads() == (cores, max(1, cores // 2))
    two_models = UpConfig(base_model="a,b", trainers=2, samplers=2)
    assert two_models.worker_threads() == (max(1, cores // 4), max(1, cores // 4))
    two_models = UpConfig(base_model="a,b", trainers=2, samplers=2, sampler_engine="torch")
    assert two_models.worker_threads() == (max(1, cores // 4), max(1, cores // 8))
    assert UpConfig(torch_threads=3).worker_threads() == (3, 3)


def test_negative_threads_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^torch_threads: must be >= 0"):
        UpConfig(torch_threads=-1).validate()


def test_a_bad_prepare_timeout_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^prepare_timeout: must be > 0"):
        UpConfig(prepare_timeout=0).validate()


def test_served_models_are_listed_by_name_and_source() -> None:
    config = load_config(
        UpConfig,
        ["--base-model", f"{LLAMA}=treadle/tiny-llama,treadle/tiny-qwen2"],
        {},
        service="up",
    )
    assert config.base_models() == [
        ServedModel(LLAMA, "treadle/tiny-llama"),
        ServedModel("treadle/tiny-qwen2", "treadle/tiny-qwen2"),
    ]


@pytest.mark.parametrize(
    ("base_model", "message"),
    [
        ("", "base_model: at least one base model is required"),
        ("=treadle/tiny-llama", "base_model: '=treadle/tiny-llama' has an empty name"),
        (f"{LLAMA}=", f"base_model: '{LLAMA}=' has an empty source"),
        (
            f"{LLAMA}=treadle/tiny-llama,{LLAMA}=treadle/tiny-qwen2",
            f"base_model: '{LLAMA}' is served twice",
        ),
        (
            "treadle/tiny-llama,treadle/tiny-llama",
            "base_model: 'treadle/tiny-llama' is served twice",
        ),
        (
            "x=treadle/tiny-llama,treadle/tiny-llama=treadle/tiny-qwen2",
            "base_model: 'treadle/tiny-llama' is a built-in model",
        ),
        ("/m/b=/m/a,x=/m/b", "base_model: '/m/b' is the source of another served model"),
    ],
)
def test_a_bad_list_of_models_is_a_one_line_error_naming_the_field(
    base_model: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(UpConfig, ["--base-model", base_model], {}, service="up")
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_up_refuses_a_duplicate_before_starting_anything(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "treadle.cli",
            "up",
            "--data-dir",
            str(tmp_path),
            "--base-model",
            "a=treadle/tiny-llama,a=treadle/tiny-qwen2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == "treadle-up: error: base_model: 'a' is served twice\n"
    assert list(tmp_path.iterdir()) == []


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


def test_tokenizers_are_written_under_the_served_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_hub_cache(
        [f"{LLAMA}=treadle/tiny-llama", "treadle/tiny-qwen2"], str(tmp_path), timeout=120
    )
    assert capsys.readouterr().out == f"writing tokenizers into {tmp_path} ...\n"
    repos = sorted(p.name for p in (tmp_path / "hub").iterdir())
    assert repos == [
        "models--meta-llama--Llama-3.2-1B",
        "models--thinkingmachineslabinc--meta-llama-3-instruct-tokenizer",  # the cookbook's
        "models--treadle--tiny-qwen2",
    ]


def test_a_failed_hub_cache_write_is_said_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "hub").write_text("not a folder")
    with pytest.raises(RuntimeError) as failed:
        write_hub_cache(["treadle/tiny-llama"], str(tmp_path), timeout=120)
    first, reason = str(failed.value).splitlines()[:2]
    assert first == "writing the tokenizers of treadle/tiny-llama failed:"
    assert reason.startswith("hub_cache: ")


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
