"""The service's Prometheus metrics move with what it does: bytes written and read, save and load
latency, requests by outcome, and failed object-store calls."""

from __future__ import annotations

import os

import grpc
from prometheus_client import REGISTRY

from checkpoints.conftest import Served, checkpoints_server, get, put, rpc_error, s3_config
from fixtures.grpc_server import free_port
from fixtures.s3 import S3Server
from treadle.v1.checkpoints_pb2 import ListCheckpointsRequest


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_transfers_and_latency_are_counted(served: Served, tenant: str) -> None:
    files = {"adapter_model.safetensors": os.urandom(300_000), "adapter_config.json": b"{}"}
    size = sum(len(data) for data in files.values())
    before = {
        name: _value(name)
        for name in (
            "treadle_checkpoints_bytes_written_total",
            "treadle_checkpoints_bytes_read_total",
            "treadle_checkpoints_save_seconds_count",
            "treadle_checkpoints_load_seconds_count",
        )
    }
    ok_puts = _value("treadle_checkpoints_requests_total", method="Put", code="OK")
    put(served.stub, tenant, "treadle://run-m/weights/a", files)
    get(served.stub, tenant, "treadle://run-m/weights/a")
    get(served.stub, tenant, "treadle://run-m/weights/a")
    missing = rpc_error(lambda: get(served.stub, tenant, "treadle://run-m/weights/absent"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    def delta(name: str) -> float:
        return _value(name) - before[name]

    assert delta("treadle_checkpoints_bytes_written_total") == size
    assert delta("treadle_checkpoints_bytes_read_total") == 2 * size
    assert delta("treadle_checkpoints_save_seconds_count") == 1
    assert delta("treadle_checkpoints_load_seconds_count") == 2
    assert _value("treadle_checkpoints_requests_total", method="Put", code="OK") == ok_puts + 1
    assert _value("treadle_checkpoints_requests_total", method="Get", code="NOT_FOUND") >= 1


def test_store_errors_are_counted(s3_server: S3Server, tenant: str) -> None:
    config = s3_config(s3_server, s3_endpoint=f"127.0.0.1:{free_port()}", s3_retries=0)
    counted = "treadle_checkpoints_store_errors_total"
    with checkpoints_server(config) as down:
        before = _value(counted, operation="bucket_exists", kind="unreachable")
        error = rpc_error(lambda: down.stub.List(ListCheckpointsRequest(tenant=tenant)))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert _value(counted, operation="bucket_exists", kind="unreachable") == before + 1
