"""TTL enforcement: the expiry sweep deletes exactly what has expired, and crash leftovers."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from minio import Minio
from prometheus_client import REGISTRY

from checkpoints.conftest import Served, checkpoints_server, get, put, s3_config
from fixtures.s3 import S3Server
from treadle.paths import parse_path
from treadle.v1.checkpoints_pb2 import ListCheckpointsRequest, SetTtlRequest
from treadle_checkpoints.expiry import ExpirySweeper
from treadle_checkpoints.layout import checkpoint_prefix
from treadle_checkpoints.lifecycle import TAG_KEY

BUCKET = "treadle-test-expiry"


@pytest.fixture(scope="module")
def sweeping(s3_server: S3Server) -> Iterator[Served]:
    """A server on its own bucket that sweeps twice a second."""
    config = s3_config(s3_server, bucket=BUCKET, sweep_interval_seconds=0.5)
    with checkpoints_server(config) as running:
        yield running


def _keys(s3: Minio, prefix: str) -> list[str]:
    return [o.object_name for o in s3.list_objects(BUCKET, prefix=prefix, recursive=True)]


def _expired_total() -> float:
    return REGISTRY.get_sample_value("treadle_checkpoints_expired_total") or 0.0


def test_a_ttl_checkpoint_is_swept_and_a_kept_one_stays(
    sweeping: Served, tenant: str, s3: Minio
) -> None:
    short, kept = "treadle://run-1/weights/rolling", "treadle://run-1/weights/final"
    before = _expired_total()
    put(sweeping.stub, tenant, short, {"w": b"soon gone"}, ttl_seconds=2)
    put(sweeping.stub, tenant, kept, {"w": b"forever"})
    assert get(sweeping.stub, tenant, short)[1] == {"w": b"soon gone"}
    short_prefix = checkpoint_prefix(tenant, parse_path(short))
    assert len(_keys(s3, short_prefix)) == 2  # data object and manifest

    deadline = time.monotonic() + 15
    while _keys(s3, short_prefix) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _keys(s3, short_prefix) == []
    assert _expired_total() >= before + 1
    listed = sweeping.stub.List(ListCheckpointsRequest(tenant=tenant))
    assert [c.path for c in listed.checkpoints] == [kept]
    assert get(sweeping.stub, tenant, kept)[1] == {"w": b"forever"}


def test_leftovers_of_unfinished_saves_go_after_the_grace_period(
    sweeping: Served, tenant: str, s3: Minio
) -> None:
    live = "treadle://run-2/weights/live"
    put(sweeping.stub, tenant, live, {"w": b"live"})
    live_prefix = checkpoint_prefix(tenant, parse_path(live))
    crashed_prefix = checkpoint_prefix(tenant, parse_path("treadle://run-2/weights/crashed"))
    leftovers = [crashed_prefix + "g0/w", live_prefix + "g0/w"]  # no manifest / old generation
    for key in leftovers:
        s3.put_object(BUCKET, key, io.BytesIO(b"partial"), 7)

    patient = ExpirySweeper(sweeping.app.store, orphan_grace_seconds=3600)
    assert sweeping.run(patient.sweep_once()).orphans_deleted == 0
    assert all(key in _keys(s3, f"{tenant}/") for key in leftovers)

    eager = ExpirySweeper(sweeping.app.store, orphan_grace_seconds=0)
    result = sweeping.run(eager.sweep_once(now=time.time() + 5))
    remaining = _keys(s3, f"{tenant}/")
    assert result.orphans_deleted >= 2 and not set(leftovers) & set(remaining)
    assert get(sweeping.stub, tenant, live)[1] == {"w": b"live"}


def test_ttl_reaches_the_store_as_a_lifecycle_tag(sweeping: Served, tenant: str, s3: Minio) -> None:
    path = "treadle://run-3/sampler_weights/periodic"
    put(sweeping.stub, tenant, path, {"w": b"x"}, ttl_seconds=7 * 86400)
    keys = _keys(s3, checkpoint_prefix(tenant, parse_path(path)))
    assert {dict(s3.get_object_tags(BUCKET, k) or {}).get(TAG_KEY) for k in keys} == {"14"}
    rules = s3.get_bucket_lifecycle(BUCKET)
    assert rules is not None and any(r.expiration.days == 14 for r in rules.rules)

    sweeping.stub.SetTtl(SetTtlRequest(tenant=tenant, path=path))  # keep forever
    assert all(not s3.get_object_tags(BUCKET, k) for k in keys)
