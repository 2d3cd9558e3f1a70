"""A save that dies midway leaves nothing a user can list or load: neither when the checkpoints
process is killed during the upload, nor when the saving client goes away."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import grpc
from minio import Minio

from checkpoints.conftest import (
    BUCKET,
    Served,
    checkpoints_flags,
    get,
    put,
    rpc_error,
    service_process,
)
from fixtures.s3 import S3Server
from treadle.paths import parse_path
from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2
from treadle.v1.checkpoints_pb2 import GetCheckpointRequest, ListCheckpointsRequest
from treadle_checkpoints.expiry import ExpirySweeper
from treadle_checkpoints.layout import checkpoint_prefix

MIB = 1 << 20


def _keys(s3: Minio, prefix: str) -> list[str]:
    return [o.object_name for o in s3.list_objects(BUCKET, prefix=prefix, recursive=True)]


def _stalled_put(tenant: str, path: str, release: threading.Event) -> Iterator[object]:
    """A Put that sends a whole small file, 8 MiB of a big one, then waits for `release`."""
    info = common_pb2.CheckpointInfo(path=path)
    yield checkpoints_pb2.PutRequest(header=checkpoints_pb2.PutHeader(tenant=tenant, info=info))
    config = checkpoints_pb2.FileChunk(file_name="adapter_config.json", data=b"{}", last=True)
    yield checkpoints_pb2.PutRequest(chunk=config)
    for _ in range(8):
        chunk = checkpoints_pb2.FileChunk(
            file_name="adapter_model.safetensors", data=os.urandom(MIB)
        )
        yield checkpoints_pb2.PutRequest(chunk=chunk)
    release.wait(60)


def _wait_for_keys(s3: Minio, prefix: str, present: bool) -> list[str]:
    deadline = time.monotonic() + 20
    while bool(keys := _keys(s3, prefix)) != present and time.monotonic() < deadline:
        time.sleep(0.1)
    return keys


def _assert_invisible(served: Served, tenant: str, path: str) -> None:
    assert not served.stub.List(ListCheckpointsRequest(tenant=tenant)).checkpoints
    error = rpc_error(lambda: served.stub.Get(GetCheckpointRequest(tenant=tenant, path=path)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_a_save_whose_server_is_killed_midway_leaves_nothing_visible(
    s3_server: S3Server, served: Served, tenant: str, s3: Minio
) -> None:
    path = "treadle://run-k/sampler_weights/killed"
    prefix = checkpoint_prefix(tenant, parse_path(path))
    release = threading.Event()
    flags = checkpoints_flags(s3_server, BUCKET) | {"part_bytes": 5 * MIB}
    with service_process("treadle_checkpoints", **flags) as doomed:
        channel = grpc.insecure_channel(doomed.address)
        call = checkpoints_pb2_grpc.CheckpointsStub(channel).Put.future(
            _stalled_put(tenant, path, release)
        )
        written = _wait_for_keys(s3, prefix, present=True)  # the first file is stored
        assert [k.rsplit("/", 1)[1] for k in written] == ["adapter_config.json"]
        doomed.kill()
        release.set()
        assert call.exception(timeout=30).code() == grpc.StatusCode.UNAVAILABLE
        channel.close()

    _assert_invisible(served, tenant, path)
    assert _keys(s3, prefix) == written  # data without a manifest: garbage, not a checkpoint
    put(served.stub, tenant, path, {"adapter_config.json": b"{}"})  # the name is free
    sweep = ExpirySweeper(served.app.store, orphan_grace_seconds=0)
    assert served.run(sweep.sweep_once(now=time.time() + 5)).orphans_deleted >= 1
    assert written[0] not in _keys(s3, prefix)
    assert get(served.stub, tenant, path)[1] == {"adapter_config.json": b"{}"}


def test_a_save_whose_client_goes_away_midway_is_cleaned_up(
    served: Served, tenant: str, s3: Minio
) -> None:
    path = "treadle://run-k/weights/abandoned"
    prefix = checkpoint_prefix(tenant, parse_path(path))
    release = threading.Event()
    call = served.stub.Put.future(_stalled_put(tenant, path, release))
    assert _wait_for_keys(s3, prefix, present=True)
    call.cancel()  # the trainer died while uploading
    release.set()
    assert _wait_for_keys(s3, prefix, present=False) == []  # the finished file was removed too
    _assert_invisible(served, tenant, path)
