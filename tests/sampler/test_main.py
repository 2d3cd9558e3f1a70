"""`python -m treadle_sampler` as a process: serves, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest

from fixtures.grpc_server import free_port, wait_serving
from treadle.v1 import sampler_pb2, sampler_pb2_grpc

pytestmark = pytest.mark.mesh  # starts a sampler process


def test_the_sampler_process_serves_until_sigterm() -> None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TREADLE_SAMPLER_MAX_ADAPTERS": "4"}
    process = subprocess.Popen(
        [sys.executable, "-m", "treadle_sampler", "--port", str(port), "--grace-seconds", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        address = f"127.0.0.1:{port}"
        wait_serving(address, timeout=60)
        with grpc.insecure_channel(address) as channel:
            info = sampler_pb2_grpc.SamplerStub(channel).GetSamplerInfo(
                sampler_pb2.GetSamplerInfoRequest(), timeout=10
            )
        assert [m.name for m in info.models] == ["treadle/tiny-llama"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
