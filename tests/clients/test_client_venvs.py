"""Client virtualenvs: each pinned official tinker SDK runs in its own venv and is the version
pinned, its first request reaching a server with the API key; venvs are keyed by their pins,
built once however many processes ask at once, and a build that failed is never used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.client_venvs import (
    COOKBOOK,
    PINS_DIR,
    TINKER_VERSIONS,
    TinkerSdk,
    client_venv,
    read_pins,
    venv_folder,
)
from fixtures.refusing_http import refusing_http_server
from treadle_models.cache import is_complete

TESTS = Path(__file__).parent.parent
KEY = "tml-client-venv-test"
# constructing a ServiceClient sends nothing in 0.24.1; the capabilities call always does
_FIRST_CALL = """
import sys, tinker
print(tinker.__version__, flush=True)
tinker.ServiceClient(base_url=sys.argv[1]).get_server_capabilities()
"""


def test_each_pinned_sdk_is_its_version_and_sends_the_key(tinker_sdk: TinkerSdk) -> None:
    with refusing_http_server() as server:
        done = subprocess.run(
            [str(tinker_sdk.python), "-c", _FIRST_CALL, server.url],
            env={**os.environ, "TINKER_API_KEY": KEY},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.stdout.splitlines()[0] == tinker_sdk.version
    assert done.returncode == 1 and "refused by the test server" in done.stderr
    first = server.requests[0]
    assert (first.method, first.path) == ("POST", "/api/v1/client/config")
    assert first.headers["x-api-key"] == KEY
    assert json.loads(first.body) == {"sdk_version": tinker_sdk.version}


def test_every_venv_is_pinned_completely_in_one_file() -> None:
    for version in TINKER_VERSIONS:
        pins = read_pins(f"tinker-{version}")
        assert f"tinker=={version}" in pins and not any(p.startswith("torch") for p in pins)
    cookbook = {pin.lower().replace("_", "-") for pin in read_pins(COOKBOOK)}  # pip's spelling
    assert {"torch==2.13.0", "tinker==0.38.0", "tinker-cookbook==0.5.8"} <= cookbook
    for path in PINS_DIR.glob("*.txt"):
        for pin in read_pins(path.stem):
            assert pin.count("==") == 1 and "+" not in pin, f"{path.name}: {pin!r} is not exact"


def test_venvs_are_keyed_by_their_pins_and_live_where_the_variable_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_CLIENT_VENVS", str(tmp_path))
    folder = venv_folder(["a==1", "b==2"], "x")
    assert folder.parent == tmp_path and folder.name.startswith("x-")
    assert venv_folder(["b==2", "a==1"], "x") == folder
    assert venv_folder(["a==1", "b==3"], "x") != folder


def test_bad_pins_are_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^pins: at least one requirement is required$"):
        client_venv([])
    with pytest.raises(ValueError, match=r"^pins: requirement strings only"):
        client_venv(["-r", "requirements.txt"])
    with pytest.raises(ValueError, match=r"^name: no pins for client venv 'tinker-9' \(known: "):
        read_pins("tinker-9")


# builds the venv once the parent says go, so that both processes reach the lock together
_RACE = """
import sys
from fixtures.client_venvs import client_venv
print("ready", flush=True)
sys.stdin.readline()
print(client_venv(["tomlkit==0.15.3"], "race", ["tomlkit"]), flush=True)
"""


@pytest.mark.clients  # builds a venv from PyPI
def test_two_processes_building_one_venv_at_once_build_it_once(tmp_path: Path) -> None:
    env = {**os.environ, "TREADLE_CLIENT_VENVS": str(tmp_path), "PYTHONPATH": str(TESTS)}
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    builders = [
        subprocess.Popen([sys.executable, "-c", _RACE], text=True, env=env, **pipes)
        for _ in range(2)
    ]
    for builder in builders:
        assert builder.stdout is not None and builder.stdout.readline() == "ready\n"
    for builder in builders:
        assert builder.stdin is not None
        builder.stdin.write("go\n")
        builder.stdin.flush()
    outputs = [builder.communicate(timeout=240) for builder in builders]
    for builder, (_, err) in zip(builders, outputs, strict=True):
        assert builder.returncode == 0, err[-3000:]
    pythons = {Path(out.strip()) for out, _ in outputs}
    assert len(pythons) == 1
    python = pythons.pop()
    assert is_complete(python.parent.parent)
    assert sum("client venv: building" in err for _, err in outputs) == 1, "built twice"
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []
    version = subprocess.run(
        [str(python), "-c", "import tomlkit; print(tomlkit.__version__)"],
        capture_output=True,
        text=True,
    )
    assert version.stdout.strip() == "0.15.3"


@pytest.mark.parametrize(
    ("pins", "imports", "reason"),
    [
        (["tomlkit==999.0.0"], [], "pip install tomlkit==999.0.0 failed"),
        (["tomlkit==0.15.3"], ["no_such_module"], "checking the pins failed"),
    ],
    ids=["pip-fails", "check-fails"],
)
def test_a_failed_build_leaves_nothing_that_is_used(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pins: list[str],
    imports: list[str],
    reason: str,
) -> None:
    monkeypatch.setenv("TREADLE_CLIENT_VENVS", str(tmp_path))
    with pytest.raises(RuntimeError, match=rf"^client venv: {reason}"):
        client_venv(pins, "broken", imports)
    folder = venv_folder(pins, "broken")
    assert not folder.exists() and not is_complete(folder)
    assert [p.name for p in tmp_path.iterdir()] == [f"{folder.name}.lock"]
