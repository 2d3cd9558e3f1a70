"""The Go client builds offline, passes its own tests, and its example trains on the real mesh.

The Go code is built in GOPATH mode against Debian's Go packages (no module downloads), from a
temporary GOPATH whose src/treadle/sdk/go links to the repository's sdk/go. The build cache
lives under build/go-cache so that grpc-go is compiled once, not on every run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from treadle_runtime.launcher import LocalMesh

ROOT = Path(__file__).resolve().parents[2]
GO_SOURCES = ["sdk/go/client", "sdk/go/cmd"]
STEPS = 8


@pytest.fixture(scope="module")
def go_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A GOPATH holding the repository's Go code, and the environment that builds from it."""
    gopath = tmp_path_factory.mktemp("gopath")
    source = gopath / "src" / "treadle" / "sdk"
    source.mkdir(parents=True)
    (source / "go").symlink_to(ROOT / "sdk" / "go")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}:/usr/share/gocode",
        "GOCACHE": str(ROOT / "build" / "go-cache"),
        "GOFLAGS": "-mod=",
        "PWD": str(source / "go"),
    }
    return source / "go", env


def go(tree: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    cwd, env = tree
    return subprocess.run(
        ["go", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def example(go_tree: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The treadle-example binary."""
    binary = tmp_path_factory.mktemp("bin") / "treadle-example"
    built = go(go_tree, "build", "-o", str(binary), "treadle/sdk/go/cmd/treadle-example")
    assert built.returncode == 0, built.stderr
    return binary


def run_example(binary: Path, endpoint: str, api_key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-endpoint", endpoint, "-api-key", api_key, "-steps", str(STEPS)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")},
    )


def test_go_sources_are_gofmt_clean() -> None:
    listed = subprocess.run(
        ["gofmt", "-l", *GO_SOURCES], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "", f"not gofmt-formatted:\n{listed.stdout}"


def test_client_unit_tests_pass(go_tree: tuple[Path, dict[str, str]]) -> None:
    tested = go(go_tree, "test", "-count=1", "treadle/sdk/go/client")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "ok" in tested.stdout


def test_client_against_the_mesh(go_tree: tuple[Path, dict[str, str]], mesh: LocalMesh) -> None:
    cwd, env = go_tree
    env = {**env, "TREADLE_TEST_ENDPOINT": mesh.endpoint, "TREADLE_TEST_API_KEY": mesh.api_key}
    tested = go((cwd, env), "test", "-count=1", "-v", "-run", "Mesh", "treadle/sdk/go/client")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    passed = re.findall(r"^--- PASS: (TestMesh\w+)", tested.stdout, re.M)
    assert len(passed) == 4 and "SKIP" not in tested.stdout, tested.stdout


def test_example_trains_pipelined_then_samples(example: Path, mesh: LocalMesh) -> None:
    done = run_example(example, mesh.endpoint, mesh.api_key)
    assert done.returncode == 0, done.stdout + done.stderr
    losses = [float(x) for x in re.findall(r"^step \d+ loss (\S+)$", done.stdout, re.M)]
    assert len(losses) == STEPS, done.stdout
    assert losses[-1] < losses[0], losses
    assert re.search(r"^saved treadle://\S+/sampler_weights/go-example$", done.stdout, re.M)
    samples = re.findall(r"^sample \d+: ([\d ]+)$", done.stdout, re.M)
    assert len(samples) == 2, done.stdout
    assert all(len(tokens.split()) > 0 for tokens in samples)


def test_example_with_a_wrong_key_fails_unauthenticated(example: Path, mesh: LocalMesh) -> None:
    done = run_example(example, mesh.endpoint, "tml-not-a-key")
    assert done.returncode != 0
    assert "UNAUTHENTICATED" in done.stderr
    assert "step" not in done.stdout
