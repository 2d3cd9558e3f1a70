"""Checkpoint administration (the SDK's RestClient): training runs, checkpoint listings, delete,
TTL, and downloads through signed links.

Everything is read from the scheduler's checkpoint admin API, which scopes it to the caller's
tenant; another tenant's run or checkpoint is 404, as one that does not exist. A checkpoint id is
`weights/{name}` or `sampler_weights/{name}` and travels in the URL as two path segments. A
download link (`archive`, `external_weights_urls`) is a gateway URL with a random token that
stands for the caller's key and one checkpoint (or one file of it) until it expires: the SDK's
CLI and the cookbook fetch it without an API key, as they fetch Tinker's signed storage URLs.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from treadle.paths import parse_path
from treadle.v1 import checkpoints_pb2, common_pb2
from treadle_gateway.errors import GatewayError, bad_input, not_found
from treadle_gateway.gateway import Gateway, api_key, gateway_of
from treadle_gateway.routes.training import checkpoint_info, tinker_path
from treadle_gateway.schemas import TtlRequest

router = APIRouter(prefix="/api/v1", tags=["checkpoints"])

KINDS = {"weights": "state", "sampler_weights": "sampler"}
TYPES = {
    common_pb2.CHECKPOINT_KIND_STATE: "training",
    common_pb2.CHECKPOINT_KIND_SAMPLER: "sampler",
}
PAGE = 500


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def checkpoint_json(info: common_pb2.CheckpointInfo) -> dict[str, Any]:
    """The SDK's Checkpoint."""
    segment = "weights" if info.kind == common_pb2.CHECKPOINT_KIND_STATE else "sampler_weights"
    return {
        "checkpoint_id": f"{segment}/{info.name}",
        "checkpoint_type": TYPES.get(info.kind, "training"),
        "time": _time(info.created_at),
        "tinker_path": tinker_path(info.path),
        "size_bytes": info.size_bytes,
        "public": False,
        "expires_at": _time(info.expires_at) if info.HasField("expires_at") else None,
    }


async def _all(gateway: Gateway, key: str, run_id: str = "") -> list[common_pb2.CheckpointInfo]:
    """Every checkpoint of the caller's (of one run), newest first."""
    found, token = [], ""
    while True:
        page = await gateway.call(
            "ListCheckpoints",
            checkpoints_pb2.ListCheckpointsRequest(run_id=run_id, page_size=PAGE, page_token=token),
            key,
        )
        found.extend(page.checkpoints)
        token = page.next_page_token
        if not token:
            return found


def _run_json(
    run_id: str, infos: list[common_pb2.CheckpointInfo], base_model: str
) -> dict[str, Any]:
    latest = max(infos, key=lambda i: i.created_at, default=None)
    states = [i for i in infos if i.kind == common_pb2.CHECKPOINT_KIND_STATE]
    samplers = [i for i in infos if i.kind == common_pb2.CHECKPOINT_KIND_SAMPLER]
    last_state = max(states, key=lambda i: i.created_at, default=None)
    last_sampler = max(samplers, key=lambda i: i.created_at, default=None)
    renderer = next((i.renderer_name for i in infos if i.renderer_name), "")
    return {
        "training_run_id": run_id,
        "base_model": latest.base_model if latest else base_model,
        "model_owner": "",
        "is_lora": True,
        "corrupted": False,
        "lora_rank": latest.lora_config.rank if latest else None,
        "last_request_time": _time(latest.created_at if latest else 0.0),
        "last_checkpoint": checkpoint_json(last_state) if last_state else None,
        "last_sampler_checkpoint": checkpoint_json(last_sampler) if last_sampler else None,
        "user_metadata": {"renderer_name": renderer} if renderer else None,
    }


async def _runs(gateway: Gateway, key: str) -> dict[str, dict[str, Any]]:
    """The caller's training runs: those with checkpoints, and its live models here."""
    by_run: dict[str, list[common_pb2.CheckpointInfo]] = {}
    for info in await _all(gateway, key):
        by_run.setdefault(info.run_id, []).append(info)
    runs = {run: _run_json(run, infos, "") for run, infos in by_run.items()}
    for run_id, base_model in gateway.sessions.models_of(key).items():
        runs.setdefault(run_id, _run_json(run_id, [], base_model))
    return runs


@router.get("/training_runs")
async def training_runs(request: Request, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """A page of the caller's training runs, newest first."""
    if limit < 0 or offset < 0:
        raise bad_input("limit" if limit < 0 else "offset", "must be >= 0")
    runs = sorted(
        (await _runs(gateway_of(request), api_key(request))).values(),
        key=lambda r: r["last_request_time"],
        reverse=True,
    )
    page = runs[offset : offset + limit]
    return {
        "training_runs": page,
        "cursor": {"offset": offset, "limit": limit, "total_count": len(runs)},
    }


@router.get("/training_runs/{run_id}")
async def training_run(run_id: str, request: Request) -> dict[str, Any]:
    """One of the caller's training runs."""
    run = (await _runs(gateway_of(request), api_key(request))).get(run_id)
    if run is None:
        raise not_found("training_run_id", f"unknown training run {run_id!r}")
    return run


@router.get("/training_runs/{run_id}/checkpoints")
async def run_checkpoints(run_id: str, request: Request) -> dict[str, Any]:
    """The checkpoints of one of the caller's runs."""
    infos = await _all(gateway_of(request), api_key(request), run_id)
    return {"checkpoints": [checkpoint_json(i) for i in infos]}


@router.get("/checkpoints")
async def checkpoints(request: Request, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """A page of all the caller's checkpoints, newest first."""
    if limit < 0 or offset < 0:
        raise bad_input("limit" if limit < 0 else "offset", "must be >= 0")
    infos = await _all(gateway_of(request), api_key(request))
    page = [checkpoint_json(i) for i in infos[offset : offset + limit]]
    return {
        "checkpoints": page,
        "cursor": {"offset": offset, "limit": limit, "total_count": len(infos)},
    }


def _path(run_id: str, kind: str, name: str) -> str:
    if kind not in KINDS:
        raise not_found("checkpoint_id", f"unknown checkpoint kind {kind!r}")
    path = f"tinker://{run_id}/{kind}/{name}"
    try:
        parse_path(path)
    except ValueError as exc:
        raise bad_input("checkpoint_id", str(exc)) from None
    return path


@router.delete("/training_runs/{run_id}/checkpoints/{kind}/{name}")
async def delete_checkpoint(run_id: str, kind: str, name: str, request: Request) -> dict[str, Any]:
    """Delete one of the caller's checkpoints."""
    gateway, key = gateway_of(request), api_key(request)
    path = _path(run_id, kind, name)
    await checkpoint_info(gateway, key, path)  # 404 unless it is the caller's
    await gateway.call(
        "DeleteCheckpoints", checkpoints_pb2.DeleteCheckpointsRequest(path=path), key
    )
    return {}


@router.put("/training_runs/{run_id}/checkpoints/{kind}/{name}/ttl")
async def set_ttl(
    run_id: str, kind: str, name: str, body: TtlRequest, request: Request
) -> dict[str, Any]:
    """Change a checkpoint's time to live (null: keep until deleted)."""
    gateway, key = gateway_of(request), api_key(request)
    change = checkpoints_pb2.SetTtlRequest(path=_path(run_id, kind, name))
    if body.ttl_seconds is not None:
        if body.ttl_seconds < 0:
            raise bad_input("ttl_seconds", f"must be >= 0, got {body.ttl_seconds}")
        change.ttl_seconds = body.ttl_seconds
    info = await gateway.call("SetCheckpointTtl", change, key)
    return checkpoint_json(info)


@router.api_route(
    "/training_runs/{run_id}/checkpoints/{kind}/{name}/publish", methods=["POST", "DELETE"]
)
async def publish(run_id: str, kind: str, name: str, request: Request) -> dict[str, Any]:
    """Publishing is not offered: checkpoints stay private to their tenant."""
    api_key(request)
    raise GatewayError(
        400, "publish: checkpoints are private to their tenant here", "user", "publish"
    )


def _link(request: Request, token: str) -> str:
    base = gateway_of(request).config.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/api/v1/downloads/{token}"


@router.get("/training_runs/{run_id}/checkpoints/{kind}/{name}/archive")
async def archive(run_id: str, kind: str, name: str, request: Request) -> Response:
    """A signed link to the checkpoint's tar archive (302, as the SDK expects)."""
    gateway, key = gateway_of(request), api_key(request)
    path = _path(run_id, kind, name)
    await checkpoint_info(gateway, key, path)
    token, expires = gateway.sign(key, path)
    response = RedirectResponse(_link(request, token), status_code=302)
    response.headers["Expires"] = datetime.fromtimestamp(expires, tz=timezone.utc).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    return response


@router.get("/training_runs/{run_id}/checkpoints/{kind}/{name}/external_weights_urls")
async def external_weights_urls(
    run_id: str, kind: str, name: str, request: Request
) -> dict[str, Any]:
    """A signed link per file of the checkpoint."""
    gateway, key = gateway_of(request), api_key(request)
    path = _path(run_id, kind, name)
    names = list(_members(await _archive_bytes(gateway, key, path)))
    urls, expires = {}, 0.0
    for file_name in names:
        token, expires = gateway.sign(key, path, file_name)
        urls[file_name] = _link(request, token)
    return {"urls": urls, "expires": _time(expires)}


async def _archive_bytes(gateway: Gateway, key: str, path: str) -> bytes:
    request = checkpoints_pb2.ExportCheckpointRequest(path=path)
    return b"".join([c.data async for c in gateway.stream("DownloadCheckpoint", request, key)])


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@router.get("/downloads/{token}", include_in_schema=True)
async def download(token: str, request: Request) -> Response:
    """What a signed link stands for (no API key: the token is the authority)."""
    gateway = gateway_of(request)
    grant = gateway.redeem(token)
    if grant.file_name:
        members = _members(await _archive_bytes(gateway, grant.api_key, grant.path))
        if grant.file_name not in members:
            raise not_found("file", f"{grant.file_name!r} is not in the checkpoint")
        return Response(members[grant.file_name], media_type="application/octet-stream")
    request_message = checkpoints_pb2.ExportCheckpointRequest(path=grant.path)
    pieces = gateway.stream("DownloadCheckpoint", request_message, grant.api_key)
    first = await anext(pieces, None)  # a refusal is an error status, not a broken 200

    async def body() -> AsyncIterator[bytes]:
        if first is not None:
            yield first.data
        async for piece in pieces:
            yield piece.data

    name = grant.path.rstrip("/").rsplit("/", 1)[-1]
    return StreamingResponse(
        body(),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar"'},
    )
