"""`python -m treadle_trainer` as a real process: it serves a cycle, reports its metrics (tokens,
wave sizes, adapters resident and held, step time, FLOPs, measured peak and MFU) on its
Prometheus port, keeps to its residency budget, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.grpc_server import free_port, wait_serving
from treadle.v1 import trainer_pb2

from .conftest import TINY, CycleClient, create, datum, forward_backward, optim_step

pytestmark = pytest.mark.mesh  # starts a trainer process

DATA = [datum(list(range(100, 140))), datum(list(range(7, 30)))]


@pytest.fixture(scope="module")
def process() -> Iterator[tuple[str, int]]:
    port, metrics_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "treadle_trainer", "--port", str(port),
        "--metrics-port", str(metrics_port), "--base-model", TINY, "--device", "cpu",
        "--max-seq-len", "64", "--max-resident-adapters", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"127.0.0.1:{port}", timeout=120)
        yield f"127.0.0.1:{port}", metrics_port
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output.decode(errors="replace")[-2000:]


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_a_cycle_through_the_process_and_its_metrics(process):
    address, metrics_port = process
    client = CycleClient(address)
    try:
        client.run_ok([create("a", rank=4, seed=1), create("b", rank=8, seed=2)])
        results, done = client.run(
            [
                forward_backward("a", DATA),
                forward_backward("b", DATA[:1]),
                optim_step("a", learning_rate=1e-2),
                optim_step("b", learning_rate=1e-2),
            ]
        )
        assert all(not r.HasField("error") for r in results.values())
        assert done.waves == 2 and done.tokens == 39 + 39 + 22
        info = client.stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=10)
        assert info.adapters == 2 and info.model.name == TINY and info.device == "cpu"
    finally:
        client.close()
    m = _metrics(metrics_port)
    assert m["treadle_trainer_tokens_total"] == done.tokens
    assert m["treadle_trainer_wave_size_count"] == 3 and m["treadle_trainer_wave_size_sum"] == 6
    assert m["treadle_trainer_adapters_resident"] == 1  # the budget
    assert m["treadle_trainer_adapters_held"] == 2
    assert m["treadle_trainer_adapter_moves_total{direction=offload}"] >= 2
    assert m["treadle_trainer_step_seconds_count{phase=forward_backward}"] == 1
    assert m["treadle_trainer_step_seconds_count{phase=optim_step}"] == 2
    assert m["treadle_trainer_busy_seconds_total"] >= done.busy_seconds > 0
    assert m["treadle_trainer_peak_flops"] > 1e9  # measured at startup
    assert m["treadle_trainer_flops_total"] > 2 * 2 * 6.6e6 * done.tokens  # 4·P per token, P > 6.6M
    assert 0 < m["treadle_trainer_mfu"] < 1
