"""Checkpoint administration through the gateway's REST routes: a save listed under its training
run, its metadata (weights_info), a TTL change, a signed link that downloads the archive or one
of its files without an API key, deletion, and another tenant's checkpoints not found."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request

from .conftest import Http
from .test_middleware import assert_refused
from .test_training import PROTOBUF, fb, model


def saved(http: Http) -> tuple[str, str]:
    """A model with one state checkpoint `s1`; (model id, its tinker path)."""
    model_id = model(http)
    http.result(
        http.post("/api/v1/forward_backward", fb(model_id, 1), headers=PROTOBUF).json["request_id"]
    )
    reply = http.post("/api/v1/save_weights", {"model_id": model_id, "seq_id": 2, "path": "s1"})
    path = http.result(reply.json["request_id"]).json["path"]
    assert path == f"tinker://{model_id}/weights/s1"
    return model_id, path


def test_a_saved_checkpoint_is_listed_described_and_downloadable(http: Http) -> None:
    model_id, path = saved(http)
    listed = http.get(f"/api/v1/training_runs/{model_id}/checkpoints").json["checkpoints"]
    assert [c["checkpoint_id"] for c in listed] == ["weights/s1"]
    assert listed[0]["tinker_path"] == path and listed[0]["checkpoint_type"] == "training"
    run = http.get(f"/api/v1/training_runs/{model_id}").json
    assert run["base_model"] == "treadle/tiny-llama" and run["lora_rank"] == 4
    assert run["last_checkpoint"]["tinker_path"] == path
    runs = http.get("/api/v1/training_runs?limit=100").json
    assert model_id in {r["training_run_id"] for r in runs["training_runs"]}
    info = http.post("/api/v1/weights_info", {"tinker_path": path}).json
    assert info["is_lora"] and info["lora_rank"] == 4 and info["base_model"] == "treadle/tiny-llama"
    ttl = http.request("PUT", f"/api/v1/training_runs/{model_id}/checkpoints/weights/s1/ttl",
                       {"ttl_seconds": 7200})  # fmt: skip
    assert ttl.status == 200 and ttl.json["expires_at"]
    archive = http.get(f"/api/v1/training_runs/{model_id}/checkpoints/weights/s1/archive")
    assert archive.status == 302
    with urllib.request.urlopen(archive.headers["location"], timeout=60) as link:  # no key
        names = tarfile.open(fileobj=io.BytesIO(link.read())).getnames()
    assert names
    urls = http.get(
        f"/api/v1/training_runs/{model_id}/checkpoints/weights/s1/external_weights_urls"
    ).json["urls"]
    assert sorted(urls) == sorted(n for n in names if not n.endswith("/"))
    first = sorted(urls)[0]
    with urllib.request.urlopen(urls[first], timeout=60) as link:
        assert link.read()


def test_another_tenants_checkpoints_are_not_found(http: Http, other: Http) -> None:
    model_id, path = saved(http)
    assert other.get(f"/api/v1/training_runs/{model_id}/checkpoints").json["checkpoints"] == []
    assert_refused(other.get(f"/api/v1/training_runs/{model_id}"), 404, "training_run_id")
    assert_refused(other.post("/api/v1/weights_info", {"tinker_path": path}), 404, "path")
    assert_refused(
        other.request("DELETE", f"/api/v1/training_runs/{model_id}/checkpoints/weights/s1"),
        404, "path",
    )  # fmt: skip
    assert_refused(other.get(f"/api/v1/training_runs/{model_id}/checkpoints/weights/s1/archive"),
                   404, "path")  # fmt: skip
    assert http.post("/api/v1/weights_info", {"tinker_path": path}).status == 200


def test_deleting_a_checkpoint_removes_it(http: Http) -> None:
    model_id, path = saved(http)
    deleted = http.request("DELETE", f"/api/v1/training_runs/{model_id}/checkpoints/weights/s1")
    assert deleted.status == 200
    assert http.get(f"/api/v1/training_runs/{model_id}/checkpoints").json["checkpoints"] == []
    assert_refused(http.post("/api/v1/weights_info", {"tinker_path": path}), 404, "path")


def test_bad_checkpoint_requests_are_refused(http: Http) -> None:
    model_id, _ = saved(http)
    base = f"/api/v1/training_runs/{model_id}/checkpoints"
    assert_refused(http.post(f"{base}/weights/s1/publish"), 400, "publish")
    assert_refused(http.get(f"{base}/nonsense/s1/archive"), 404, "checkpoint_id")
    assert_refused(http.post("/api/v1/weights_info", {"tinker_path": "not-a-path"}), 400, "path")
    assert_refused(http.get("/api/v1/downloads/forged-token"), 404, "token")
    negative = http.request("PUT", f"{base}/weights/s1/ttl", {"ttl_seconds": -5})
    assert_refused(negative, 400, "ttl_seconds")
    assert json.loads(http.get("/api/v1/healthz").raw) == {"status": "ok"}
