"""The Checkpoints service against a real SeaweedFS: what trainer, sampler and users rely on."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import uuid

import grpc
import pytest
from minio import Minio

from checkpoints.conftest import (
    BUCKET,
    Served,
    checkpoints_server,
    get,
    put,
    put_requests,
    rpc_error,
    s3_config,
)
from fixtures.grpc_server import free_port
from treadle.paths import parse_path
from treadle.v1 import common_pb2
from treadle.v1.checkpoints_pb2 import (
    DeleteCheckpointsRequest,
    ExportCheckpointRequest,
    GetCheckpointRequest,
    GetCheckpointResponse,
    ListCheckpointsRequest,
    PutHeader,
    SetTtlRequest,
)
from treadle_checkpoints.layout import checkpoint_prefix
from treadle_checkpoints.lifecycle import DAY_LADDER
from treadle_checkpoints.manifest import FileEntry, checkpoint_digest
from treadle_runtime.seaweed import S3Server

ADAPTER = {
    "adapter_config.json": b'{"r": 8, "lora_alpha": 16}',
    "adapter_model.safetensors": os.urandom(3_000_000),  # three 1 MiB chunks
    "empty.bin": b"",
}


def test_the_bucket_and_its_lifecycle_rules_are_made_at_startup(
    s3_server: S3Server, s3: Minio
) -> None:
    bucket = f"treadle-boot-{uuid.uuid4().hex[:8]}"
    assert not s3.bucket_exists(bucket)
    with checkpoints_server(s3_config(s3_server, bucket=bucket)):
        assert s3.bucket_exists(bucket)
        rules = s3.get_bucket_lifecycle(bucket)
        assert rules is not None
        assert {r.rule_id for r in rules.rules} == {f"treadle-expire-{d}d" for d in DAY_LADDER}


def test_put_then_get_returns_the_same_files_and_metadata(served: Served, tenant: str) -> None:
    path = "treadle://run-a/sampler_weights/step-10"
    lora = common_pb2.LoraConfig(rank=8, alpha=16.0)
    stored = put(served.stub, tenant, path, ADAPTER, base_model="tiny", lora_config=lora, step=10)
    assert (stored.tenant, stored.run_id, stored.name) == (tenant, "run-a", "step-10")
    assert stored.kind == common_pb2.CHECKPOINT_KIND_SAMPLER
    assert stored.size_bytes == sum(len(d) for d in ADAPTER.values())
    assert abs(stored.created_at - time.time()) < 30 and not stored.HasField("expires_at")
    digests = [FileEntry(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in ADAPTER.items()]
    assert stored.sha256 == checkpoint_digest(digests)

    info, files, chunks = get(served.stub, tenant, path)
    assert files == ADAPTER
    assert chunks >= 5  # the 3 MB file came in several chunk messages
    assert info == stored and info.lora_config == lora and info.base_model == "tiny"


def test_tinker_paths_name_the_same_checkpoint(served: Served, tenant: str) -> None:
    put(served.stub, tenant, "tinker://run-t/weights/final", {"a": b"1"})
    info, files, _ = get(served.stub, tenant, "treadle://run-t/weights/final")
    assert files == {"a": b"1"} and info.path == "treadle://run-t/weights/final"


def test_list_is_newest_first_and_paginates(served: Served, tenant: str) -> None:
    paths = [f"treadle://run-l/weights/step-{i}" for i in range(5)]
    for path in paths:
        put(served.stub, tenant, path, {"w": path.encode()})
    put(served.stub, tenant, "treadle://other-run/weights/x", {"w": b"x"})

    seen, token, pages = [], "", 0
    while True:
        request = ListCheckpointsRequest(
            tenant=tenant, run_id="run-l", page_size=2, page_token=token
        )
        page = served.stub.List(request)
        seen += [c.path for c in page.checkpoints]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == paths[::-1] and pages == 3

    everything = served.stub.List(ListCheckpointsRequest(tenant=tenant))
    assert len(everything.checkpoints) == 6 and not everything.next_page_token
    assert all(c.tenant == tenant for c in everything.checkpoints)


def test_another_tenant_sees_nothing(served: Served, tenant: str) -> None:
    path = "treadle://run-s/weights/secret"
    put(served.stub, tenant, path, {"w": b"mine"})
    intruder = tenant + "-other"
    missing = "treadle://run-s/weights/never-saved"
    calls = {
        "get": lambda p: served.stub.Get(GetCheckpointRequest(tenant=intruder, path=p)),
        "delete": lambda p: served.stub.Delete(DeleteCheckpointsRequest(tenant=intruder, path=p)),
        "set_ttl": lambda p: served.stub.SetTtl(
            SetTtlRequest(tenant=intruder, path=p, ttl_seconds=1)
        ),
        "export": lambda p: served.stub.Export(ExportCheckpointRequest(tenant=intruder, path=p)),
    }
    for name, call in calls.items():
        theirs = rpc_error(lambda call=call: call(path))
        nothing = rpc_error(lambda call=call: call(missing))
        assert theirs.code() == nothing.code() == grpc.StatusCode.NOT_FOUND, name
        assert theirs.details() == nothing.details().replace("never-saved", "secret"), name
    listed = served.stub.List(ListCheckpointsRequest(tenant=intruder))
    assert not listed.checkpoints
    run = served.stub.Delete(DeleteCheckpointsRequest(tenant=intruder, run_id="run-s"))
    assert not run.deleted
    assert get(served.stub, tenant, path)[1] == {"w": b"mine"}  # untouched by all of that


def test_overwrite_must_be_asked_for(served: Served, tenant: str) -> None:
    path = "treadle://run-o/weights/latest"
    first = put(served.stub, tenant, path, {"w": b"one", "extra": b"x"})
    error = rpc_error(lambda: put(served.stub, tenant, path, {"w": b"two"}))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and path in error.details()
    assert get(served.stub, tenant, path)[1] == {"w": b"one", "extra": b"x"}

    second = put(served.stub, tenant, path, {"w": b"two"}, overwrite=True, step=2)
    assert second.sha256 != first.sha256 and second.step == 2
    assert get(served.stub, tenant, path)[1] == {"w": b"two"}


def test_a_save_without_manifest_is_invisible(served: Served, tenant: str, s3: Minio) -> None:
    path = "treadle://run-c/weights/crashed"
    prefix = checkpoint_prefix(tenant, parse_path(path))
    s3.put_object(BUCKET, prefix + "g1/adapter_model.safetensors", io.BytesIO(b"half"), 4)
    listed = served.stub.List(ListCheckpointsRequest(tenant=tenant))
    assert not listed.checkpoints
    error = rpc_error(lambda: served.stub.Get(GetCheckpointRequest(tenant=tenant, path=path)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    put(served.stub, tenant, path, {"w": b"complete"})  # not "already exists": it never was
    assert get(served.stub, tenant, path)[1] == {"w": b"complete"}


def test_a_corrupted_object_is_data_loss_naming_it(served: Served, tenant: str, s3: Minio) -> None:
    path = "treadle://run-d/weights/rotten"
    put(served.stub, tenant, path, {"good": b"fine", "adapter.bin": b"A" * 5000})
    prefix = checkpoint_prefix(tenant, parse_path(path))
    key = next(
        o.object_name
        for o in s3.list_objects(BUCKET, prefix=prefix, recursive=True)
        if o.object_name.endswith("/adapter.bin")
    )
    s3.put_object(BUCKET, key, io.BytesIO(b"B" * 5000), 5000)

    request = GetCheckpointRequest(tenant=tenant, path=path)
    responses: list[GetCheckpointResponse] = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in served.stub.Get(request):
            responses.append(response)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert key in caught.value.details()
    completed = {r.chunk.file_name for r in responses if r.HasField("chunk") and r.chunk.last}
    assert completed == {"good"}  # the corrupt file was never marked complete

    export = ExportCheckpointRequest(tenant=tenant, path=path)
    error = rpc_error(lambda: served.stub.Export(export))
    assert error.code() == grpc.StatusCode.DATA_LOSS and key in error.details()


def test_set_ttl_changes_and_clears_expiry(served: Served, tenant: str) -> None:
    path = "treadle://run-ttl/weights/periodic"
    put(served.stub, tenant, path, {"w": b"1"}, ttl_seconds=3600)
    longer = served.stub.SetTtl(SetTtlRequest(tenant=tenant, path=path, ttl_seconds=7 * 86400))
    assert abs(longer.expires_at - (time.time() + 7 * 86400)) < 60
    assert get(served.stub, tenant, path)[0].expires_at == longer.expires_at
    (listed,) = served.stub.List(
        ListCheckpointsRequest(tenant=tenant, run_id="run-ttl")
    ).checkpoints
    assert listed.expires_at == longer.expires_at

    kept = served.stub.SetTtl(SetTtlRequest(tenant=tenant, path=path))
    assert not kept.HasField("expires_at")
    assert not get(served.stub, tenant, path)[0].HasField("expires_at")
    (listed,) = served.stub.List(
        ListCheckpointsRequest(tenant=tenant, run_id="run-ttl")
    ).checkpoints
    assert not listed.HasField("expires_at")

    served.stub.SetTtl(SetTtlRequest(tenant=tenant, path=path, ttl_seconds=0))
    error = rpc_error(lambda: served.stub.Get(GetCheckpointRequest(tenant=tenant, path=path)))
    assert error.code() == grpc.StatusCode.NOT_FOUND  # expired behaves as missing


def test_export_is_a_tar_of_the_files_and_metadata(served: Served, tenant: str) -> None:
    path = "treadle://run-e/sampler_weights/final"
    stored = put(served.stub, tenant, path, ADAPTER, step=7)
    chunks = list(served.stub.Export(ExportCheckpointRequest(tenant=tenant, path=path)))
    archive = b"".join(c.data for c in chunks)
    assert chunks[0].total_bytes == len(archive)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert names[0] == "metadata.json" and set(names) == {"metadata.json", *ADAPTER}
    assert all(contents[name] == data for name, data in ADAPTER.items())
    metadata = contents["metadata.json"].decode()
    assert stored.sha256 in metadata and '"step": "7"' in metadata


def test_delete_one_checkpoint_or_a_whole_run(served: Served, tenant: str, s3: Minio) -> None:
    for name in ("a", "b", "c"):
        put(served.stub, tenant, f"treadle://run-x/weights/{name}", {"w": name.encode()})
    put(served.stub, tenant, "treadle://run-y/weights/a", {"w": b"y"})
    one = served.stub.Delete(
        DeleteCheckpointsRequest(tenant=tenant, path="treadle://run-x/weights/a")
    )
    assert list(one.deleted) == ["treadle://run-x/weights/a"]
    run = served.stub.Delete(DeleteCheckpointsRequest(tenant=tenant, run_id="run-x"))
    assert list(run.deleted) == ["treadle://run-x/weights/b", "treadle://run-x/weights/c"]
    left = served.stub.List(ListCheckpointsRequest(tenant=tenant))
    assert [c.path for c in left.checkpoints] == ["treadle://run-y/weights/a"]
    assert not list(s3.list_objects(BUCKET, prefix=f"{tenant}/run-x/", recursive=True))


def test_bad_input_is_invalid_argument_naming_the_field(served: Served, tenant: str) -> None:
    def put_error(header: PutHeader | None, files: dict[str, bytes]) -> grpc.RpcError:
        return rpc_error(lambda: served.stub.Put(put_requests(header, files), timeout=30))

    def header(path: str = "treadle://run-b/weights/x", **fields: object) -> PutHeader:
        info = common_pb2.CheckpointInfo(path=path)
        return PutHeader(tenant=tenant, info=info, **fields)  # type: ignore[arg-type]

    cases = {
        "path": put_error(header("s3://bucket/x"), {"w": b"1"}),
        "ttl_seconds": put_error(header(ttl_seconds=-1), {"w": b"1"}),
        "header": put_error(None, {"w": b"1"}),
        "chunk.file_name": put_error(header(), {"../escape": b"1"}),
        "tenant": put_error(PutHeader(info=header().info), {"w": b"1"}),
        "info.kind": put_error(
            PutHeader(
                tenant=tenant,
                info=common_pb2.CheckpointInfo(
                    path="treadle://run-b/weights/x", kind=common_pb2.CHECKPOINT_KIND_SAMPLER
                ),
            ),
            {"w": b"1"},
        ),
    }
    for field, error in cases.items():
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert field in error.details(), (field, error.details())
    bad_get = rpc_error(lambda: served.stub.Get(GetCheckpointRequest(tenant=tenant, path="nope")))
    assert bad_get.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_get.details().startswith("path")
    bad_ttl = rpc_error(
        lambda: served.stub.SetTtl(
            SetTtlRequest(tenant=tenant, path="treadle://run-b/weights/x", ttl_seconds=-5)
        )
    )
    assert bad_ttl.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_ttl.details().startswith("ttl_seconds")
    listed = served.stub.List(ListCheckpointsRequest(tenant=tenant))
    assert not listed.checkpoints  # no failed Put left anything behind


def test_unreachable_store_is_unavailable(s3_server: S3Server, tenant: str) -> None:
    config = s3_config(s3_server, s3_endpoint=f"127.0.0.1:{free_port()}", s3_retries=0)
    with checkpoints_server(config) as served:
        get_error = rpc_error(
            lambda: served.stub.Get(
                GetCheckpointRequest(tenant=tenant, path="treadle://r/weights/x")
            )
        )
        put_error = rpc_error(
            lambda: put(served.stub, tenant, "treadle://r/weights/x", {"w": b"1"})
        )
    for error in (get_error, put_error):
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "object store unreachable" in error.details()
