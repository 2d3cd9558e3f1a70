"""Receiving a Put's file chunks into the store, one streamed upload per file.

Chunks of a file arrive in order and a file's final chunk sets `last`; each file's size and
sha256 are computed as its bytes pass, so the manifest can be written without reading anything
back. If the stream fails or the sender goes away, the file in flight is abandoned and the
finished ones are deleted (shielded, so a cancelled Put still cleans up after itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from minio.commonconfig import Tags

from treadle.v1 import checkpoints_pb2
from treadle_checkpoints import metrics
from treadle_checkpoints.manifest import FileEntry, file_name_problem
from treadle_checkpoints.s3_store import S3Store, Upload
from treadle_runtime.errors import OpError, invalid

log = logging.getLogger(__name__)


async def receive_files(
    store: S3Store,
    requests: AsyncIterator[checkpoints_pb2.PutRequest],
    base: str,
    tags: Tags | None,
) -> list[FileEntry]:
    """Store every file of the stream at `base` + its name; INVALID_ARGUMENT on a bad stream."""
    files: list[FileEntry] = []
    try:
        await _receive(store, requests, base, tags, files)
    except (OpError, asyncio.CancelledError):
        await asyncio.shield(discard(store, [base + f.name for f in files]))
        raise
    return files


async def _receive(
    store: S3Store,
    requests: AsyncIterator[checkpoints_pb2.PutRequest],
    base: str,
    tags: Tags | None,
    files: list[FileEntry],
) -> None:
    upload: Upload | None = None
    name, digest, size = "", hashlib.sha256(), 0
    try:
        async for request in requests:
            if request.WhichOneof("part") != "chunk":
                raise invalid("header", "only the first message of a Put may be a header")
            chunk = request.chunk
            if upload is None:
                problem = file_name_problem(chunk.file_name)
                if problem is not None:
                    raise invalid("chunk.file_name", problem)
                if any(f.name == chunk.file_name for f in files):
                    raise invalid("chunk.file_name", f"{chunk.file_name!r} was sent twice")
                name, digest, size = chunk.file_name, hashlib.sha256(), 0
                upload = store.upload(base + name, tags=tags)
            elif chunk.file_name != name:
                raise invalid(
                    "chunk.file_name",
                    f"{chunk.file_name!r} began before {name!r} ended "
                    "(a file's final chunk sets last)",
                )
            if chunk.data:
                digest.update(chunk.data)
                size += len(chunk.data)
                await upload.write(chunk.data)
            if chunk.last:
                await upload.finish()
                upload = None
                files.append(FileEntry(name=name, size=size, sha256=digest.hexdigest()))
                metrics.BYTES_WRITTEN.inc(size)
        if upload is not None:
            raise invalid("chunk.last", f"the stream ended before the last chunk of {name!r}")
        if not files:
            raise invalid("chunk", "a checkpoint needs at least one file")
    finally:
        if upload is not None:
            upload.cancel()


async def stop_when_refused(
    requests: AsyncIterator[checkpoints_pb2.PutRequest], check: asyncio.Future[Any]
) -> AsyncIterator[checkpoints_pb2.PutRequest]:
    """The Put's messages, cut short by `check`'s error as soon as it has one (a save that is
    refused while its data is still arriving stops at once)."""
    async for request in requests:
        if check.done() and not check.cancelled() and check.exception() is not None:
            raise check.exception()  # type: ignore[misc]
        yield request


async def discard(store: S3Store, keys: list[str]) -> None:
    """Best-effort removal of data objects no manifest points at (the sweep catches misses)."""
    try:
        await store.delete(keys)
    except OpError as exc:
        log.warning("left objects for the sweep", extra={"reason": exc.message})
