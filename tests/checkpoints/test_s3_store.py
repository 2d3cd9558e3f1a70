"""The S3 store: streamed multipart uploads, reads in chunks, and uploads given up."""

from __future__ import annotations

import asyncio
import hashlib
import os

from fixtures.s3 import S3Server
from treadle_checkpoints.s3_store import ObjectMissing, S3Store

BUCKET = "treadle-test-store"
MIB = 1 << 20


def _store(s3_server: S3Server) -> S3Store:
    return S3Store(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=BUCKET,
        part_bytes=5 * MIB,
    )


def test_a_file_larger_than_a_part_streams_through(s3_server: S3Server) -> None:
    data = os.urandom(12 * MIB + 123)

    async def scenario() -> tuple[bytes, list[int]]:
        store = _store(s3_server)
        await store.ensure_bucket()
        upload = store.upload("big/file.bin")
        for start in range(0, len(data), MIB):
            await upload.write(data[start : start + MIB])
        await upload.finish()
        pieces = [piece async for piece in store.stream("big/file.bin", 4 * MIB)]
        return b"".join(pieces), [len(p) for p in pieces]

    stored, sizes = asyncio.run(scenario())
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert sizes == [4 * MIB, 4 * MIB, 4 * MIB, 123]


def test_a_cancelled_upload_stores_nothing(s3_server: S3Server) -> None:
    async def scenario() -> tuple[bytes | None, list[str]]:
        store = _store(s3_server)
        await store.ensure_bucket()
        upload = store.upload("gone/file.bin")
        for _ in range(7):
            await upload.write(os.urandom(MIB))  # past the first part: a multipart upload
        upload.cancel()
        await asyncio.sleep(0.5)
        return await store.read("gone/file.bin"), [o.key for o in await store.list("gone/")]

    assert asyncio.run(scenario()) == (None, [])


def test_a_stream_hashes_as_it_reads_and_can_be_abandoned(s3_server: S3Server) -> None:
    data = os.urandom(6 * MIB + 7)

    async def scenario() -> tuple[str, bytes, list[bytes], bool]:
        store = _store(s3_server)
        await store.ensure_bucket()
        await store.write("read/file.bin", data)
        digest = hashlib.sha256()
        whole = b"".join([p async for p in store.stream("read/file.bin", MIB, digest, ahead=2)])
        first: list[bytes] = []
        async for piece in store.stream("read/file.bin", MIB, ahead=2):
            first.append(piece)
            break  # the reader thread stops instead of reading the rest into nothing
        again = [p async for p in store.stream("read/file.bin", 4 * MIB)]
        missing = False
        try:
            async for _ in store.stream("read/absent.bin", MIB):
                pass
        except ObjectMissing:
            missing = True
        return digest.hexdigest(), whole, [first[0], b"".join(again)], missing

    digest, whole, (first, again), missing = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert whole == data == again and digest == hashlib.sha256(data).hexdigest()
    assert first == data[:MIB]
    assert missing
