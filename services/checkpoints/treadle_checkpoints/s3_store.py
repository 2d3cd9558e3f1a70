"""The object store: the only code in Treadle that talks to S3 (through the `minio` client).

Every minio call blocks, so each runs in a worker thread (asyncio.to_thread) and the event loop
never waits on the network. Failures come back as OpError: a store that cannot be reached is
UNAVAILABLE (retryable), any other S3 error INTERNAL; a missing object is `ObjectMissing`, which
callers turn into their own answer. Large files stream through a bounded pipe into a multipart
upload, so memory per upload is `parallel_parts` + 1 parts plus a few chunks, whatever the file
size.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import queue
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import urllib3
from minio import Minio
from minio.commonconfig import Tags
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from treadle_checkpoints import lifecycle, metrics
from treadle_checkpoints.config import CheckpointsConfig
from treadle_runtime.errors import OpError

log = logging.getLogger(__name__)

T = TypeVar("T")
_MISSING_CODES = ("NoSuchKey", "NoSuchObject")
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError, ServerError, InvalidResponseError)
_BUFFERED_CHUNKS = 8  # chunks an upload may hold before the sender waits
_READER_THREADS = 64  # streams read at once; more wait for a thread


class ObjectMissing(Exception):
    """The object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class UploadAborted(Exception):
    """The sender gave up on an upload; the partial object is discarded."""


@dataclass(frozen=True)
class StoredObject:
    """One object of a listing."""

    key: str
    size: int
    last_modified: float  # Unix seconds
    etag: str


class S3Store:
    """One bucket on one S3 server."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
        timeout_seconds: float = 10.0,
        retries: int = 2,
        part_bytes: int = 16 << 20,
        parallel_parts: int = 3,
        lifecycle_rules: bool = True,
    ) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_seconds, read=max(60.0, timeout_seconds)),
            maxsize=32,
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._client = Minio(
            endpoint,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region,
            http_client=http,
        )
        self.endpoint = endpoint
        self.bucket = bucket
        self.part_bytes = part_bytes
        self.parallel_parts = parallel_parts
        self.lifecycle_rules = lifecycle_rules
        self._bootstrapped = False
        self._bootstrap_lock: asyncio.Lock | None = None
        # A stream's reader holds its thread while the caller sends; its own pool keeps slow
        # readers of a Get from starving every other S3 call of the default pool.
        self._readers = ThreadPoolExecutor(
            max_workers=_READER_THREADS, thread_name_prefix="s3-read"
        )

    def close(self) -> None:
        """Stop the stream readers' threads (a read still running ends with its stream)."""
        self._readers.shutdown(wait=False, cancel_futures=True)

    @classmethod
    def from_config(cls, config: CheckpointsConfig) -> S3Store:
        """The store `config` describes."""
        return cls(
            endpoint=config.s3_endpoint,
            access_key=config.s3_access_key,
            secret_key=config.s3_secret_key,
            bucket=config.bucket,
            secure=config.s3_secure,
            region=config.s3_region,
            timeout_seconds=config.s3_timeout_seconds,
            retries=config.s3_retries,
            part_bytes=config.part_bytes,
            parallel_parts=config.parallel_parts,
            lifecycle_rules=config.lifecycle_rules,
        )

    async def _run(
        self,
        operation: str,
        fn: Callable[..., T],
        *args: Any,
        executor: ThreadPoolExecutor | None = None,
        **kwargs: Any,
    ) -> T:
        """Run one blocking minio call in a thread (of `executor`, else the loop's default
        pool), translating its failures."""
        try:
            if executor is not None:
                call = functools.partial(fn, *args, **kwargs)
                return await asyncio.get_running_loop().run_in_executor(executor, call)
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise ObjectMissing(exc.object_name or "") from None
            metrics.STORE_ERRORS.labels(operation, exc.code or "S3Error").inc()
            raise OpError(
                grpc.StatusCode.INTERNAL,
                f"object store error during {operation}: {exc.code}: {exc.message}",
            ) from exc
        except _UNREACHABLE as exc:
            metrics.STORE_ERRORS.labels(operation, "unreachable").inc()
            reason = getattr(exc, "reason", None) or exc
            raise OpError(
                grpc.StatusCode.UNAVAILABLE,
                f"object store unreachable at {self.endpoint}: {type(reason).__name__}",
            ) from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket if missing and install the lifecycle rules (once per process).

        UNAVAILABLE while the store cannot be reached; later calls try again.
        """
        if self._bootstrapped:
            return
        self._bootstrap_lock = self._bootstrap_lock or asyncio.Lock()
        async with self._bootstrap_lock:
            if self._bootstrapped:
                return
            if not await self._run("bucket_exists", self._client.bucket_exists, self.bucket):
                try:
                    await self._run("make_bucket", self._client.make_bucket, self.bucket)
                except OpError:
                    if not await self._run(
                        "bucket_exists", self._client.bucket_exists, self.bucket
                    ):
                        raise
                log.info("created bucket", extra={"bucket": self.bucket})
            if self.lifecycle_rules:
                try:
                    await self._run(
                        "set_bucket_lifecycle",
                        self._client.set_bucket_lifecycle,
                        self.bucket,
                        lifecycle.lifecycle_config(),
                    )
                except OpError as exc:
                    if exc.code == grpc.StatusCode.UNAVAILABLE:
                        raise
                    log.warning("lifecycle rules not set", extra={"reason": exc.message})
            self._bootstrapped = True

    async def read(self, key: str) -> bytes | None:
        """The whole object at `key`, or None if there is none."""
        try:
            return await self._run("get", self._read_all, key)
        except ObjectMissing:
            return None

    def _read_all(self, key: str) -> bytes:
        response = self._client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def write(self, key: str, data: bytes, *, tags: Tags | None = None) -> None:
        """Store `data` at `key` in one request."""
        await self._run(
            "put",
            self._client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type="application/json" if key.endswith(".json") else None,
            tags=tags,
        )

    def upload(self, key: str, *, tags: Tags | None = None) -> Upload:
        """Start writing `key` from chunks as they arrive (see `Upload`)."""
        return Upload(self, key, tags)

    async def stream(
        self, key: str, chunk_bytes: int, digest: Any = None, *, ahead: int = 4
    ) -> AsyncGenerator[bytes, None]:
        """The object's bytes in pieces of `chunk_bytes`; ObjectMissing if there is none.

        One worker thread makes the request and reads on, feeding each piece to `digest` (a
        hashlib object) when one is given, up to `ahead` pieces before the caller takes them:
        reading, hashing and the caller's sending overlap instead of taking turns. The end is
        known from the response's length, without one more (empty) read. Bytes come as stored
        (no content decoding).
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[bytes | None] = asyncio.Queue()
        room = threading.Semaphore(ahead)
        stop = threading.Event()

        def pump() -> None:
            response = self._client.get_object(self.bucket, key)
            try:
                while not stop.is_set():
                    data: bytes = response.read(chunk_bytes, decode_content=False)
                    if digest is not None:
                        digest.update(data)
                    if data:
                        while not room.acquire(timeout=1.0):  # a forgotten stream ends too
                            if stop.is_set() or loop.is_closed():
                                return
                        loop.call_soon_threadsafe(pieces.put_nowait, data)
                    if not data or response.length_remaining == 0:
                        return
            finally:
                response.close()
                response.release_conn()

        reader = asyncio.ensure_future(self._run("get", pump, executor=self._readers))
        reader.add_done_callback(lambda _: pieces.put_nowait(None))  # after every piece
        try:
            while (data := await pieces.get()) is not None:
                room.release()
                yield data
            await reader  # raises why the read stopped, if it failed
        finally:
            stop.set()
            room.release()  # a reader waiting for room wakes, sees `stop` and ends
            await asyncio.gather(reader, return_exceptions=True)

    async def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with `prefix`."""

        def run() -> list[StoredObject]:
            found = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return [
                StoredObject(
                    key=o.object_name or "",
                    size=o.size or 0,
                    last_modified=o.last_modified.timestamp() if o.last_modified else 0.0,
                    etag=o.etag or "",
                )
                for o in found
                if not o.is_dir
            ]

        return await self._run("list", run)

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete `keys` (absent ones are fine)."""
        objects = [DeleteObject(key) for key in keys]
        if not objects:
            return

        def run() -> list[str]:
            errors = self._client.remove_objects(self.bucket, objects)
            return [f"{e.name}: {e.code}" for e in errors if e.code not in _MISSING_CODES]

        failed = await self._run("delete", run)
        if failed:
            metrics.STORE_ERRORS.labels("delete", "partial").inc()
            raise OpError(
                grpc.StatusCode.INTERNAL, f"object store could not delete {', '.join(failed)}"
            )

    async def set_tags(self, key: str, tags: Tags | None) -> None:
        """Replace the object's tags (None removes them)."""
        if tags is None:
            await self._run("tags", self._client.delete_object_tags, self.bucket, key)
        else:
            await self._run("tags", self._client.set_object_tags, self.bucket, key, tags)


class Upload:
    """One object written from chunks as they arrive.

    A worker thread runs minio's multipart upload reading from a queue; `write` hands it chunks
    and waits when `_BUFFERED_CHUNKS` are pending, so a fast sender cannot fill memory. minio
    asks for a whole part per `read` and appends what it gets to what it has, so `read` gathers
    the part first and returns it as one block (one copy, instead of one per chunk received).
    Parts go up `parallel_parts` at a time. `cancel` makes the thread give up (the partial
    multipart upload is aborted, nothing is stored).
    """

    def __init__(self, store: S3Store, key: str, tags: Tags | None) -> None:
        self.key = key
        self._store = store
        self._tags = tags
        self._loop = asyncio.get_running_loop()
        self._chunks: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
        self._space = asyncio.Semaphore(_BUFFERED_CHUNKS)
        self._pending = memoryview(b"")
        self._ended = False
        self._task: asyncio.Task[Any] | None = None
        self._closed = False

    def _start(self) -> asyncio.Task[Any]:
        if self._task is None:
            self._task = asyncio.ensure_future(
                self._store._run(
                    "put",
                    self._store._client.put_object,
                    self._store.bucket,
                    self.key,
                    self,
                    -1,
                    part_size=self._store.part_bytes,
                    num_parallel_uploads=self._store.parallel_parts,
                    tags=self._tags,
                )
            )
        return self._task

    async def write(self, data: bytes) -> None:
        """Queue `data`; raises the upload's error if it has already failed."""
        task = self._start()
        if self._space.locked():  # full: wait for room, or for the upload to stop
            acquire = asyncio.ensure_future(self._space.acquire())
            await asyncio.wait({acquire, task}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                await task  # raises why the upload stopped
                raise OpError(grpc.StatusCode.INTERNAL, f"upload of {self.key} ended early")
        else:
            await self._space.acquire()
        if task.done():
            await task  # failed early: say why instead of queueing into nothing
        self._chunks.put(data)

    async def finish(self) -> None:
        """Mark the end of the data and wait until the object is stored."""
        task = self._start()
        self._closed = True
        self._chunks.put(None)
        await task

    def cancel(self) -> None:
        """Give up: the thread stops at its next read and the object is not stored."""
        if not self._closed:
            self._closed = True
            self._chunks.put(UploadAborted(self.key))
        if self._task is not None:
            self._task.add_done_callback(_consume_exception)

    def _next_chunk(self) -> bool:
        """Move the next queued chunk into `_pending`; False at the end of the data."""
        if self._ended:
            return False
        item = self._chunks.get()
        if item is None:
            self._ended = True
            return False
        if isinstance(item, BaseException):
            raise item
        self._pending = memoryview(item)
        self._loop.call_soon_threadsafe(self._space.release)
        return True

    def read(self, size: int = -1) -> bytes:
        """File-like read for minio (worker thread): `size` bytes, fewer only at the end."""
        pieces: list[memoryview] = []
        wanted = size if size >= 0 else sys.maxsize
        while wanted > 0 and (self._pending or self._next_chunk()):
            piece = self._pending[:wanted]
            self._pending = self._pending[len(piece) :]
            pieces.append(piece)
            wanted -= len(piece)
        return b"".join(pieces)


def _consume_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
