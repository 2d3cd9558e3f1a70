"""The `treadle.v1.Checkpoints` servicer: Put, Get, List, Delete, SetTtl and Export over S3.

Every call is scoped by tenant through the key layout (layout.py), so another tenant's checkpoint
and a missing one give the same NOT_FOUND. A checkpoint is visible exactly while its manifest
exists and has not expired. Put streams each file into its own object under a fresh generation
and commits by writing the manifest last; Get and Export verify every byte against the manifest's
sha256 and never mark a file complete (`last`) before it has passed. Their file pieces go out as
wire bytes written directly (treadle_runtime.wire_bytes), not as messages that protobuf would
copy twice to build and serialize (as costly as the hop itself): `add_to_server` registers the
generated handlers with serializers that pass bytes through.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc

from treadle.paths import CheckpointPath, parse_path, valid_name
from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2
from treadle_checkpoints import layout, lifecycle, listing, metrics, tar_stream
from treadle_checkpoints.config import CheckpointsConfig
from treadle_checkpoints.manifest import FileEntry, Manifest, checkpoint_digest
from treadle_checkpoints.receive import discard, receive_files, stop_when_refused
from treadle_checkpoints.s3_store import ObjectMissing, S3Store
from treadle_runtime.checkpoint_client import piece_bytes
from treadle_runtime.errors import OpError, invalid, rpc, streaming_rpc
from treadle_runtime.wire_bytes import chunk_message, data_chunk_message

log = logging.getLogger(__name__)

_KIND_OF = {
    "state": common_pb2.CHECKPOINT_KIND_STATE,
    "sampler": common_pb2.CHECKPOINT_KIND_SAMPLER,
}


def _tenant(value: str) -> str:
    if not value:
        raise invalid("tenant", "is required")
    return value


def _path(value: str, field: str = "path") -> CheckpointPath:
    try:
        return parse_path(value)
    except ValueError as exc:
        message = str(exc) if field == "path" else f"{field}: {exc}"
        raise OpError(grpc.StatusCode.INVALID_ARGUMENT, message, field) from None


def _not_found(path: str) -> OpError:
    return OpError(grpc.StatusCode.NOT_FOUND, f"path: no checkpoint {path}", "path")


def _ttl(request: Any) -> float | None:
    if not request.HasField("ttl_seconds"):
        return None
    if request.ttl_seconds < 0:
        raise invalid("ttl_seconds", f"must be >= 0, got {request.ttl_seconds}")
    return float(request.ttl_seconds)


class CheckpointsServicer(checkpoints_pb2_grpc.CheckpointsServicer):
    """Checkpoint storage over one S3 bucket."""

    def __init__(self, store: S3Store, config: CheckpointsConfig) -> None:
        self.store = store
        self.config = config

    async def _ready(self) -> None:
        await self.store.ensure_bucket()

    async def _manifest(self, tenant: str, path: CheckpointPath) -> Manifest | None:
        """The stored manifest, expired or not; None when there is none."""
        key = layout.manifest_key(tenant, path)
        raw = await self.store.read(key)
        if raw is None:
            return None
        try:
            return Manifest.from_bytes(raw)
        except ValueError as exc:
            raise OpError(grpc.StatusCode.DATA_LOSS, f"object {key}: {exc}") from None

    async def _visible(self, tenant: str, path: CheckpointPath, asked: str) -> Manifest:
        """The live manifest of `path`; NOT_FOUND alike when missing, expired or not `tenant`'s."""
        manifest = await self._manifest(tenant, path)
        if manifest is None or manifest.expired():
            raise _not_found(asked)
        return manifest

    # Put

    @rpc(metrics.REQUESTS)
    async def Put(
        self, request_iterator: AsyncIterator[checkpoints_pb2.PutRequest], context: Any
    ) -> common_pb2.CheckpointInfo:
        started = time.monotonic()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise invalid("header", "the first message of a Put must be a PutHeader")
        header = first.header
        tenant = _tenant(header.tenant)
        path = self._check_info(header.info)
        ttl = _ttl(header)
        await self._ready()
        # The existence check runs while the data arrives; a refusal cuts the upload short.
        check = asyncio.ensure_future(self._replaceable(tenant, path, header.overwrite))
        prefix = layout.checkpoint_prefix(tenant, path)
        generation = layout.new_generation()
        tags = lifecycle.object_tags(lifecycle.expire_days(created_at=0.0, expires_at=ttl))
        base = prefix + generation + "/"
        try:
            files = await receive_files(
                self.store, stop_when_refused(request_iterator, check), base, tags
            )
        except BaseException:
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)
            raise
        try:
            previous = await check
            info = common_pb2.CheckpointInfo()
            info.CopyFrom(header.info)
            info.path, info.run_id, info.name = str(path), path.run_id, path.name
            info.kind, info.tenant = _KIND_OF[path.kind], tenant
            info.created_at = time.time()
            if ttl is not None:
                info.expires_at = info.created_at + ttl
            info.size_bytes = sum(f.size for f in files)
            info.sha256 = checkpoint_digest(files)
            manifest = Manifest(info=info, generation=generation, files=files)
            await self.store.write(prefix + layout.MANIFEST, manifest.to_bytes(), tags=tags)
        except OpError:
            await discard(self.store, [base + f.name for f in files])
            raise
        if previous is not None:
            await discard(self.store, [prefix + previous.object_name(f) for f in previous.files])
        metrics.SAVE_SECONDS.observe(time.monotonic() - started)
        log.info("saved", extra={"path": info.path, "tenant": tenant, "bytes": info.size_bytes})
        return info

    async def _replaceable(
        self, tenant: str, path: CheckpointPath, overwrite: bool
    ) -> Manifest | None:
        """The manifest a Put of `path` replaces (None when there is none); ALREADY_EXISTS when
        a live checkpoint is there and `overwrite` is not set."""
        try:
            previous = await self._manifest(tenant, path)
        except OpError as exc:  # an unreadable manifest may only be replaced on purpose
            if exc.code != grpc.StatusCode.DATA_LOSS or not overwrite:
                raise
            return None
        if previous is not None and not previous.expired() and not overwrite:
            raise OpError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"path: checkpoint {path} already exists (set overwrite to replace it)",
                "path",
            )
        return previous

    def _check_info(self, info: common_pb2.CheckpointInfo) -> CheckpointPath:
        path = _path(info.path, "info.path")
        if info.kind not in (common_pb2.CHECKPOINT_KIND_UNSPECIFIED, _KIND_OF[path.kind]):
            raise invalid(
                "info.kind",
                f"{common_pb2.CheckpointKind.Name(info.kind)} does not match path {info.path}",
            )
        if info.run_id and info.run_id != path.run_id:
            raise invalid("info.run_id", f"{info.run_id!r} does not match path {info.path}")
        if info.name and info.name != path.name:
            raise invalid("info.name", f"{info.name!r} does not match path {info.path}")
        return path

    # Get and Export

    async def _file_pieces(
        self, tenant: str, path: CheckpointPath, asked: str, manifest: Manifest, entry: FileEntry
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        """(bytes, is_last) pieces of one file; the last one only once size and sha256 match."""
        key = layout.checkpoint_prefix(tenant, path) + manifest.object_name(entry)
        digest, size, held = hashlib.sha256(), 0, None
        try:
            stream = self.store.stream(
                key, piece_bytes(entry.size, self.config.chunk_bytes), digest
            )
            async with aclosing(stream) as pieces:
                async for piece in pieces:
                    size += len(piece)
                    if held is not None:
                        yield held, False
                    held = piece
        except ObjectMissing:
            await self._explain_missing(tenant, path, asked, manifest, key)
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise OpError(
                grpc.StatusCode.DATA_LOSS,
                f"object {key} of {asked} is corrupt: {size} bytes with sha256 "
                f"{digest.hexdigest()[:16]}…, the manifest says {entry.size} bytes with "
                f"{entry.sha256[:16]}…",
            )
        metrics.BYTES_READ.inc(size)
        yield held or b"", True

    async def _explain_missing(
        self, tenant: str, path: CheckpointPath, asked: str, manifest: Manifest, key: str
    ) -> None:
        """A data object vanished mid-read: deleted, replaced, or lost."""
        current = await self._manifest(tenant, path)
        if current is None or current.expired():
            raise _not_found(asked)
        if current.generation != manifest.generation:
            raise OpError(
                grpc.StatusCode.ABORTED, f"checkpoint {asked} was replaced while being read; retry"
            )
        raise OpError(grpc.StatusCode.DATA_LOSS, f"object {key} of {asked} is missing")

    @streaming_rpc(metrics.REQUESTS)
    async def Get(  # type: ignore[override]  # file pieces are wire bytes (add_to_server)
        self, request: checkpoints_pb2.GetCheckpointRequest, context: Any
    ) -> AsyncGenerator[checkpoints_pb2.GetCheckpointResponse | bytes, None]:
        started = time.monotonic()
        tenant, path = _tenant(request.tenant), _path(request.path)
        await self._ready()
        manifest = await self._visible(tenant, path, request.path)
        yield checkpoints_pb2.GetCheckpointResponse(info=manifest.info)
        for entry in manifest.files:
            pieces = self._file_pieces(tenant, path, request.path, manifest, entry)
            async with aclosing(pieces):
                async for data, last in pieces:
                    yield chunk_message(entry.name, data, last)
        metrics.LOAD_SECONDS.observe(time.monotonic() - started)

    @streaming_rpc(metrics.REQUESTS)
    async def Export(  # type: ignore[override]  # file pieces are wire bytes (add_to_server)
        self, request: checkpoints_pb2.ExportCheckpointRequest, context: Any
    ) -> AsyncGenerator[checkpoints_pb2.DataChunk | bytes, None]:
        tenant, path = _tenant(request.tenant), _path(request.path)
        await self._ready()
        manifest = await self._visible(tenant, path, request.path)
        mtime = manifest.info.created_at
        metadata = manifest.export_metadata()
        members = [("metadata.json", len(metadata))] + [(f.name, f.size) for f in manifest.files]
        total = tar_stream.archive_size(members, mtime)
        head = tar_stream.member_header("metadata.json", len(metadata), mtime)
        yield checkpoints_pb2.DataChunk(
            data=head + metadata + tar_stream.padding(len(metadata)), total_bytes=total
        )
        for entry in manifest.files:
            yield checkpoints_pb2.DataChunk(
                data=tar_stream.member_header(entry.name, entry.size, mtime)
            )
            pieces = self._file_pieces(tenant, path, request.path, manifest, entry)
            async with aclosing(pieces):
                async for data, _ in pieces:
                    if data:
                        yield data_chunk_message(data)
            if tar_stream.padding(entry.size):
                yield checkpoints_pb2.DataChunk(data=tar_stream.padding(entry.size))
        yield checkpoints_pb2.DataChunk(data=tar_stream.END)

    # List, Delete, SetTtl

    @rpc(metrics.REQUESTS)
    async def List(
        self, request: checkpoints_pb2.ListCheckpointsRequest, context: Any
    ) -> checkpoints_pb2.ListCheckpointsResponse:
        tenant = _tenant(request.tenant)
        if request.run_id and not valid_name(request.run_id):
            raise invalid("run_id", f"{request.run_id!r} is not a valid run id")
        if request.page_size < 0:
            raise invalid("page_size", f"must be >= 0, got {request.page_size}")
        await self._ready()
        prefix = (
            layout.run_prefix(tenant, request.run_id)
            if request.run_id
            else layout.tenant_prefix(tenant)
        )
        infos, token = await listing.list_page(
            self.store, prefix, page_size=request.page_size, page_token=request.page_token
        )
        return checkpoints_pb2.ListCheckpointsResponse(checkpoints=infos, next_page_token=token)

    @rpc(metrics.REQUESTS)
    async def Delete(
        self, request: checkpoints_pb2.DeleteCheckpointsRequest, context: Any
    ) -> checkpoints_pb2.DeleteCheckpointsResponse:
        tenant = _tenant(request.tenant)
        if request.path:
            path = _path(request.path)
            if request.run_id and request.run_id != path.run_id:
                raise invalid("run_id", f"{request.run_id!r} is not the run of {request.path}")
            await self._ready()
            manifest = await self._visible(tenant, path, request.path)
            deleted = [manifest.info.path]
            prefix = layout.checkpoint_prefix(tenant, path)
        elif request.run_id:
            if not valid_name(request.run_id):
                raise invalid("run_id", f"{request.run_id!r} is not a valid run id")
            await self._ready()
            prefix = layout.run_prefix(tenant, request.run_id)
            deleted = []
        else:
            raise invalid("path", "give a checkpoint path, or a run_id to delete a whole run")
        objects = await self.store.list(prefix)
        manifests = listing.manifest_keys(objects)
        if not request.path:
            deleted = [m.info.path for m in await listing.live_manifests(self.store, manifests)]
        await self.store.delete(manifests)  # first: the checkpoints vanish at once
        data = set(o.key for o in objects) - set(manifests)
        await self.store.delete(sorted(data))
        log.info("deleted", extra={"tenant": tenant, "paths": ",".join(deleted)})
        return checkpoints_pb2.DeleteCheckpointsResponse(deleted=sorted(deleted))

    @rpc(metrics.REQUESTS)
    async def SetTtl(
        self, request: checkpoints_pb2.SetTtlRequest, context: Any
    ) -> common_pb2.CheckpointInfo:
        tenant, path = _tenant(request.tenant), _path(request.path)
        ttl = _ttl(request)
        await self._ready()
        manifest = await self._visible(tenant, path, request.path)
        info = manifest.info
        if ttl is None:
            info.ClearField("expires_at")
        else:
            info.expires_at = time.time() + ttl
        expires_at = info.expires_at if info.HasField("expires_at") else None
        tags = lifecycle.object_tags(lifecycle.expire_days(info.created_at, expires_at))
        prefix = layout.checkpoint_prefix(tenant, path)
        # Data objects first: a longer TTL must reach them before the manifest promises it.
        await asyncio.gather(
            *(self._retag(prefix + manifest.object_name(f), tags) for f in manifest.files)
        )
        await self.store.write(prefix + layout.MANIFEST, manifest.to_bytes(), tags=tags)
        return info

    async def _retag(self, key: str, tags: Any) -> None:
        try:
            await self.store.set_tags(key, tags)
        except OpError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE:
                raise
            log.warning("lifecycle tag not updated", extra={"key": key, "reason": exc.message})


class _Registrations:
    """Stands in for a server to collect what the generated registration function adds."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers = dict(handlers)


def _bytes_as_they_are(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` (server-streaming) with a serializer that sends bytes items unchanged."""
    serialize = handler.response_serializer
    assert serialize is not None and handler.unary_stream is not None

    def serializer(item: Any) -> bytes:
        return item if isinstance(item, bytes) else serialize(item)

    return grpc.unary_stream_rpc_method_handler(
        handler.unary_stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=serializer,
    )


def add_to_server(
    servicer: checkpoints_pb2_grpc.CheckpointsServicer, server: grpc.aio.Server
) -> None:
    """Register `servicer` with the generated handlers, Get's and Export's serializers letting
    items that are already wire bytes through (an interceptor that wraps their response streams
    sees those bytes). Raises if the generated code did not hand over every method."""
    service = checkpoints_pb2.DESCRIPTOR.services_by_name["Checkpoints"]
    generated = _Registrations()
    checkpoints_pb2_grpc.add_CheckpointsServicer_to_server(servicer, generated)  # type: ignore[arg-type]
    if set(generated.handlers) != {method.name for method in service.methods}:
        raise RuntimeError(
            f"the generated registration handed over {sorted(generated.handlers)}, not every "
            f"method of {service.full_name}"
        )
    handlers = {
        name: _bytes_as_they_are(handler) if name in ("Get", "Export") else handler
        for name, handler in generated.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # grpc-stubs lacks the method that grpcio (and the generated code) uses
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
