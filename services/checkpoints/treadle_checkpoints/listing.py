"""Listing a tenant's checkpoints: find manifests by key, read them, newest first, in pages.

The page token is the sort key (created_at, path) of the last entry returned, so a page never
repeats or skips entries when checkpoints are added or removed between calls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging

from treadle.v1 import common_pb2
from treadle_checkpoints import layout
from treadle_checkpoints.manifest import Manifest
from treadle_checkpoints.s3_store import S3Store, StoredObject
from treadle_runtime.errors import invalid

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_PARALLEL_READS = 16


def manifest_keys(objects: list[StoredObject]) -> list[str]:
    """Keys of the manifests among `objects`."""
    keys = []
    for obj in objects:
        parts = layout.parse_key(obj.key)
        if parts is not None and parts.rest == layout.MANIFEST:
            keys.append(obj.key)
    return keys


async def live_manifests(store: S3Store, keys: list[str]) -> list[Manifest]:
    """The manifests at `keys` that still exist, parse and have not expired."""
    limit = asyncio.Semaphore(_PARALLEL_READS)

    async def read(key: str) -> Manifest | None:
        async with limit:
            raw = await store.read(key)
        if raw is None:
            return None
        try:
            manifest = Manifest.from_bytes(raw)
        except ValueError as exc:
            log.warning("unreadable manifest", extra={"key": key, "reason": str(exc)})
            return None
        return None if manifest.expired() else manifest

    found = await asyncio.gather(*(read(key) for key in keys))
    return [m for m in found if m is not None]


def _sort_key(info: common_pb2.CheckpointInfo) -> tuple[float, str]:
    return (-info.created_at, info.path)


def encode_token(info: common_pb2.CheckpointInfo) -> str:
    """The token of the page after `info`."""
    return base64.urlsafe_b64encode(json.dumps([info.created_at, info.path]).encode()).decode()


def decode_token(token: str) -> tuple[float, str]:
    """The sort key a token stands for; INVALID_ARGUMENT naming page_token if it is not one."""
    try:
        created_at, path = json.loads(base64.urlsafe_b64decode(token.encode()))
        return (-float(created_at), str(path))
    except (ValueError, TypeError) as exc:
        raise invalid("page_token", "is not a token from a previous List") from exc


async def list_page(
    store: S3Store, prefix: str, *, page_size: int, page_token: str
) -> tuple[list[common_pb2.CheckpointInfo], str]:
    """One page of the live checkpoints under `prefix`, newest first, and the next token."""
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_token(page_token) if page_token else None
    manifests = await live_manifests(store, manifest_keys(await store.list(prefix)))
    infos = sorted((m.info for m in manifests), key=_sort_key)
    if after is not None:
        infos = [info for info in infos if _sort_key(info) > after]
    page = infos[:size]
    token = encode_token(page[-1]) if len(infos) > size else ""
    return page, token
