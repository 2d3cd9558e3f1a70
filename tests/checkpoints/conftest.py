"""A real checkpoints server over the session's SeaweedFS, and helpers to call it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from minio import Minio

from fixtures.grpc_server import free_port, running_server, wait_serving
from fixtures.s3 import S3Server
from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2
from treadle_checkpoints.app import CheckpointsApp
from treadle_checkpoints.config import CheckpointsConfig

BUCKET = "treadle-test-checkpoints"


@dataclass
class Served:
    """A running checkpoints server: its address, its parts, and a blocking stub."""

    address: str
    app: CheckpointsApp
    stub: checkpoints_pb2_grpc.CheckpointsStub

    def run(self, coroutine: Any) -> Any:
        """Run `coroutine` on the server's event loop and return its result."""
        assert self.app.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.app.loop).result(60)


def s3_config(s3: S3Server, **overrides: Any) -> CheckpointsConfig:
    """A config for the test bucket on `s3`, no periodic sweep unless overridden."""
    config = CheckpointsConfig(
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        bucket=BUCKET,
        sweep_interval_seconds=0,
    )
    return dataclasses.replace(config, **overrides)


@contextmanager
def checkpoints_server(config: CheckpointsConfig) -> Iterator[Served]:
    """Serve `config` in-process until the block ends (sweep stopped first)."""
    app = CheckpointsApp(config)
    with running_server(app, service="checkpoints", config=config) as address:
        channel = grpc.insecure_channel(address)
        served = Served(address, app, checkpoints_pb2_grpc.CheckpointsStub(channel))
        try:
            yield served
        finally:
            served.run(app.close())
            channel.close()


@dataclass
class Process:
    """A service running as its own process."""

    address: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL: the process ends at once, without any shutdown of its own."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


@contextmanager
def service_process(module: str, **flags: object) -> Iterator[Process]:
    """`python -m module --flag value ...` on a free port, until the block ends (SIGTERM)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
    for key, value in flags.items():
        command += ["--" + key.replace("_", "-"), str(value)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    try:
        wait_serving(address, timeout=120)
        yield Process(address, process)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def checkpoints_flags(s3: S3Server, bucket: str = BUCKET) -> dict[str, object]:
    """Flags of a checkpoints process on `bucket` of `s3` (no periodic sweep)."""
    return {
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "bucket": bucket,
        "sweep_interval_seconds": 0,
    }


@pytest.fixture(scope="module")
def served(s3_server: S3Server) -> Iterator[Served]:
    """One checkpoints server per test module."""
    with checkpoints_server(s3_config(s3_server)) as running:
        yield running


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses."""
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def s3(s3_server: S3Server) -> Minio:
    """A plain S3 client on the test server, to look at and tamper with objects directly."""
    return Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )


def put(
    stub: checkpoints_pb2_grpc.CheckpointsStub,
    tenant: str,
    path: str,
    files: dict[str, bytes],
    *,
    chunk_bytes: int = 1 << 20,
    ttl_seconds: int | None = None,
    overwrite: bool = False,
    **info: Any,
) -> common_pb2.CheckpointInfo:
    """Put `files` as `path` through the raw RPC."""
    header = checkpoints_pb2.PutHeader(
        tenant=tenant,
        info=common_pb2.CheckpointInfo(path=path, **info),
        overwrite=overwrite,
        ttl_seconds=ttl_seconds,
    )
    return stub.Put(put_requests(header, files, chunk_bytes), timeout=30)


def put_requests(
    header: checkpoints_pb2.PutHeader | None, files: dict[str, bytes], chunk_bytes: int = 1 << 20
) -> Iterator[checkpoints_pb2.PutRequest]:
    """The messages of a Put: the header (if any), then each file in chunks."""
    if header is not None:
        yield checkpoints_pb2.PutRequest(header=header)
    for name, data in files.items():
        starts = range(0, max(len(data), 1), chunk_bytes)
        for start in starts:
            chunk = checkpoints_pb2.FileChunk(
                file_name=name,
                data=data[start : start + chunk_bytes],
                last=start == starts[-1],
            )
            yield checkpoints_pb2.PutRequest(chunk=chunk)


def get(
    stub: checkpoints_pb2_grpc.CheckpointsStub, tenant: str, path: str
) -> tuple[common_pb2.CheckpointInfo, dict[str, bytes], int]:
    """Get through the raw RPC: (info, files, number of chunk messages)."""
    request = checkpoints_pb2.GetCheckpointRequest(tenant=tenant, path=path)
    responses = list(stub.Get(request, timeout=30))
    assert responses[0].HasField("info")
    files: dict[str, bytes] = {}
    for response in responses[1:]:
        files[response.chunk.file_name] = files.get(response.chunk.file_name, b"") + (
            response.chunk.data
        )
    return responses[0].info, files, len(responses) - 1


def rpc_error(call: Any) -> grpc.RpcError:
    """The RpcError `call()` raises (consuming a stream if it returns one)."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    return caught.value
