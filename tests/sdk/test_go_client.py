"""The Go client builds offline, passes its own tests, and its example trains on the real mesh,
also through a connection cut mid-run (the session resumes, nothing runs twice).

The Go code is built in GOPATH mode against Debian's Go packages (no module downloads), from a
temporary GOPATH whose src/treadle/sdk/go links to the repository's sdk/go. The build cache
lives under build/go-cache so that grpc-go is compiled once, not on every run. Connections are
cut by the TCP proxy of tests/fixtures/proxy.py between the example and the scheduler.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.proxy import CuttableProxy, cuttable_proxy
from fixtures.scheduler import SchedulerFactory
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


def run_example(
    binary: Path, endpoint: str, api_key: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-endpoint", endpoint, "-api-key", api_key, "-steps", str(STEPS), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")},
    )


def run_example_acting(
    binary: Path, endpoint: str, api_key: str, act: Callable[[str], None], *flags: str
) -> subprocess.CompletedProcess[str]:
    """Run the example, calling `act` with each line it prints as soon as it prints it."""
    command = [str(binary), "-endpoint", endpoint, "-api-key", api_key, "-steps", str(STEPS)]
    command += ["-timeout", "60s"]
    with subprocess.Popen(
        [*command, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")},
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            act(line)
        stderr = process.stderr.read()
        returncode = process.wait(timeout=120)
    return subprocess.CompletedProcess(command, returncode, "".join(lines), stderr)


def losses_of(stdout: str) -> list[float]:
    return [float(x) for x in re.findall(r"^step \d+ loss (\S+)$", stdout, re.M)]


def trainer_ops(mesh: LocalMesh) -> dict[tuple[str, str], float]:
    """treadle_trainer_ops by (kind, code), summed over the mesh's trainers."""
    counts: dict[tuple[str, str], float] = {}
    for service in mesh.services:
        if not service.name.startswith("trainer"):
            continue
        url = f"http://127.0.0.1:{service.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "treadle_trainer_ops_total":
                    key = (sample.labels["kind"], sample.labels["code"])
                    counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def cut_after(proxy: CuttableProxy, steps: set[int]) -> Callable[[str], None]:
    """An action that cuts every connection through `proxy` once each of `steps` is printed."""

    def act(line: str) -> None:
        printed = re.match(r"^step (\d+) loss", line)
        if printed and int(printed.group(1)) in steps:
            proxy.cut()

    return act


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
    assert len(passed) == 5 and "SKIP" not in tested.stdout, tested.stdout


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


def test_example_survives_cut_streams_and_runs_every_request_once(
    example: Path, mesh: LocalMesh
) -> None:
    reference = run_example(example, mesh.endpoint, mesh.api_key)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    before = trainer_ops(mesh)
    with cuttable_proxy(mesh.endpoint) as proxy:
        done = run_example_acting(example, proxy.address, mesh.api_key, cut_after(proxy, {2, 5}))
    after = trainer_ops(mesh)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.cuts == 2
    assert re.search(r"^reconnects 2$", done.stdout, re.M), done.stdout
    assert losses_of(done.stdout) == pytest.approx(losses_of(reference.stdout), rel=1e-4)
    assert re.search(r"^saved treadle://\S+/sampler_weights/go-example$", done.stdout, re.M)
    ran = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    assert ran.get(("forward_backward", "OK")) == STEPS, ran
    assert ran.get(("optim_step", "OK")) == STEPS, ran
    assert ran.get(("save_checkpoint", "OK")) == 1, ran


def test_example_notices_a_silently_dead_connection_and_runs_every_request_once(
    example: Path, mesh: LocalMesh
) -> None:
    """After step 2 the proxy keeps the connection open and drops every byte; keepalive (10 s,
    5 s to answer) ends it, the session resumes on a new connection and nothing runs twice."""
    before = trainer_ops(mesh)
    with cuttable_proxy(mesh.endpoint) as proxy:

        def freeze_after_step_2(line: str) -> None:
            if line.startswith("step 2 loss"):
                proxy.freeze()

        done = run_example_acting(
            example, proxy.address, mesh.api_key, freeze_after_step_2, "-keepalive", "10s"
        )
        connections = proxy.connections
    after = trainer_ops(mesh)
    assert done.returncode == 0, done.stdout + done.stderr
    assert connections >= 2
    assert re.search(r"^reconnects 1$", done.stdout, re.M), done.stdout
    ran = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    assert ran.get(("forward_backward", "OK")) == STEPS, ran
    assert ran.get(("optim_step", "OK")) == STEPS, ran


def test_a_stream_restored_to_a_scheduler_without_the_session_fails_aborted(
    example: Path, make_scheduler: SchedulerFactory
) -> None:
    with make_scheduler() as first, make_scheduler() as fresh:
        with cuttable_proxy(first) as proxy:

            def fail_over(line: str) -> None:
                if line.startswith("step 2 loss"):
                    proxy.target_port = int(fresh.rsplit(":", 1)[1])
                    proxy.cut()

            started = time.monotonic()
            done = run_example_acting(example, proxy.address, "tml-team-a", fail_over)
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 120  # failed, not retrying for ever
    assert "step 2 loss" in done.stdout and "step 3 loss" not in done.stdout
    assert "ABORTED: session_id:" in done.stderr and "no longer knows session" in done.stderr


def test_a_reconnection_refused_fails_with_the_schedulers_code_and_message(
    example: Path, make_scheduler: SchedulerFactory, mesh: LocalMesh
) -> None:
    with make_scheduler() as first:
        with cuttable_proxy(first) as proxy:

            def fail_over(line: str) -> None:  # the mesh's scheduler does not know this key
                if line.startswith("step 2 loss"):
                    proxy.target_port = int(mesh.endpoint.rsplit(":", 1)[1])
                    proxy.cut()

            done = run_example_acting(example, proxy.address, "tml-team-a", fail_over)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 3 loss" not in done.stdout
    assert re.search(r"step 3 forward_backward: UNAUTHENTICATED: \S", done.stderr), done.stderr


def test_a_scheduler_gone_for_good_fails_unavailable_after_the_attempts_allowed(
    example: Path, make_scheduler: SchedulerFactory
) -> None:
    scheduler = make_scheduler()
    address = scheduler.__enter__()
    flags = ["-api-key", "tml-team-a", "-steps", "1000", "-reconnect-attempts", "3"]
    try:
        process = subprocess.Popen(
            [str(example), "-endpoint", address, *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("step 2 loss"):
                break
    finally:
        scheduler.__exit__(None, None, None)
    stopped = time.monotonic()
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, stdout + stderr
    assert time.monotonic() - stopped < 90  # gave up after its attempts
    assert "step 1000 loss" not in stdout
    assert re.search(
        r"UNAVAILABLE: session stream lost and not restored within 3 attempts", stderr
    ), stderr
