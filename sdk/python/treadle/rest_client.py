"""RestClient: a tenant's checkpoints and runs (list, weights info, delete, TTL, download).

Everything here is derived from the public scheduler's four checkpoint RPCs (List, Delete,
SetTtl, Download), each scoped to the caller's tenant by the API key: weights info is read from
a checkpoint's listed metadata, and deleting by filter is a listing followed by deletes. Archives
stream to disk chunk by chunk (a progress callback sees every chunk), so a checkpoint of any size
downloads in constant memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import grpc

from treadle import wire
from treadle.contract.transport import message_options
from treadle.errors import RequestFailedError, ValidationError
from treadle.futures import APIFuture
from treadle.paths import parse_path
from treadle.types import Checkpoint
from treadle.v1 import checkpoints_pb2, common_pb2, scheduler_pb2_grpc

if TYPE_CHECKING:
    from treadle.service_client import ServiceClient

Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 when unknown)
CheckpointType = Literal["training", "sampler"]
_SERVER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


@dataclass
class WeightsInfo:
    """What a checkpoint's weights are (Tinker's weights_info): base model, LoRA shape, step."""

    path: str
    base_model: str
    is_lora: bool
    lora_rank: int
    lora_alpha: float
    train_attn: bool
    train_mlp: bool
    train_unembed: bool
    step: int
    size_bytes: int
    checkpoint_type: CheckpointType
    renderer_name: str = ""


def _weights_info(info: common_pb2.CheckpointInfo) -> WeightsInfo:
    lora = info.lora_config
    return WeightsInfo(
        path=info.path,
        base_model=info.base_model,
        is_lora=True,
        lora_rank=lora.rank,
        lora_alpha=lora.alpha if lora.HasField("alpha") else float(lora.rank),
        train_attn=lora.train_attn,
        train_mlp=lora.train_mlp,
        train_unembed=lora.train_unembed,
        step=info.step,
        size_bytes=info.size_bytes,
        checkpoint_type=wire.checkpoint_from_proto(info).checkpoint_type,
        renderer_name=info.renderer_name,
    )


def _failed(exc: grpc.RpcError) -> RequestFailedError:
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    return RequestFailedError(code.name, details, "server" if code in _SERVER_CODES else "user")


def _now() -> APIFuture[None]:
    return APIFuture.completed(None)


class RestClient:
    """Checkpoint administration for the caller's tenant."""

    def __init__(self, service: ServiceClient) -> None:
        self.service = service

    # ------------------------------------------------------------------ listing
    def _infos(self, run_id: str) -> list[common_pb2.CheckpointInfo]:
        found: list[common_pb2.CheckpointInfo] = []
        token = ""
        while True:
            request = checkpoints_pb2.ListCheckpointsRequest(
                run_id=run_id, page_size=500, page_token=token
            )
            page = self.service.connection.unary("ListCheckpoints", request).result()
            found.extend(page.checkpoints)
            token = page.next_page_token
            if not token:
                return found

    def list_checkpoints(self, run_id: str = "") -> APIFuture[list[Checkpoint]]:
        """Checkpoints of one run (the training model id), or of all runs when empty."""
        return _now().then(lambda _: [wire.checkpoint_from_proto(i) for i in self._infos(run_id)])

    def list_user_checkpoints(self) -> APIFuture[list[Checkpoint]]:
        """Every checkpoint of the caller's tenant."""
        return self.list_checkpoints("")

    def get_weights_info(self, path: str) -> APIFuture[WeightsInfo]:
        """Base model, LoRA rank and switches, step and size of the checkpoint at `path`."""
        try:
            parsed = parse_path(path)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

        def find() -> WeightsInfo:
            for info in self._infos(parsed.run_id):
                if info.path == str(parsed):
                    return _weights_info(info)
            raise RequestFailedError("NOT_FOUND", f"path: no checkpoint {path}", "user", "path")

        return _now().then(lambda _: find())

    get_weights_info_by_tinker_path = get_weights_info  # Tinker's name

    # ------------------------------------------------------------------ deleting
    def delete_checkpoint(self, path: str) -> APIFuture[list[str]]:
        """Delete one checkpoint; returns the deleted paths."""
        request = checkpoints_pb2.DeleteCheckpointsRequest(path=path)
        future = self.service.connection.unary("DeleteCheckpoints", request)
        return APIFuture(future, lambda r: list(r.deleted))

    def delete_run(self, run_id: str) -> APIFuture[list[str]]:
        """Delete every checkpoint of a run."""
        request = checkpoints_pb2.DeleteCheckpointsRequest(run_id=run_id)
        future = self.service.connection.unary("DeleteCheckpoints", request)
        return APIFuture(future, lambda r: list(r.deleted))

    def matching_checkpoints(
        self,
        run_id: str = "",
        older_than_seconds: float | None = None,
        checkpoint_type: CheckpointType | None = None,
    ) -> APIFuture[list[Checkpoint]]:
        """The checkpoints of `run_id` (all runs when empty) created more than
        `older_than_seconds` ago and of `checkpoint_type`, each filter applying when given."""
        if older_than_seconds is not None and older_than_seconds < 0:
            raise ValidationError(f"older_than_seconds: must be >= 0, got {older_than_seconds}")
        if checkpoint_type not in (None, "training", "sampler"):
            raise ValidationError(f"checkpoint_type: {checkpoint_type!r} is not training|sampler")

        def select(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
            cutoff = None if older_than_seconds is None else time.time() - older_than_seconds
            return [
                c
                for c in checkpoints
                if (cutoff is None or c.time < cutoff)
                and (checkpoint_type is None or c.checkpoint_type == checkpoint_type)
            ]

        return self.list_checkpoints(run_id).then(select)

    def delete_checkpoints(
        self,
        run_id: str = "",
        older_than_seconds: float | None = None,
        checkpoint_type: CheckpointType | None = None,
    ) -> APIFuture[list[str]]:
        """Delete every checkpoint `matching_checkpoints` selects; returns the deleted paths.
        At least one filter is required (deleting all of a tenant's checkpoints is not a filter)."""
        if not run_id and older_than_seconds is None and checkpoint_type is None:
            raise ValidationError("give run_id, older_than_seconds or checkpoint_type")
        if run_id and older_than_seconds is None and checkpoint_type is None:
            return self.delete_run(run_id)

        def delete(checkpoints: list[Checkpoint]) -> list[str]:
            deleted: list[str] = []
            for checkpoint in checkpoints:
                try:
                    deleted += self.delete_checkpoint(checkpoint.path).result()
                except RequestFailedError as exc:
                    if exc.code != "NOT_FOUND":  # gone meanwhile (expired, deleted): fine
                        raise
            return sorted(deleted)

        return self.matching_checkpoints(run_id, older_than_seconds, checkpoint_type).then(delete)

    # ------------------------------------------------------------------ TTL
    def set_checkpoint_ttl(self, path: str, ttl_seconds: int | None) -> APIFuture[Checkpoint]:
        """Keep a checkpoint `ttl_seconds` from now (None keeps it until deleted)."""
        if ttl_seconds is not None and ttl_seconds < 0:
            raise ValidationError(f"ttl_seconds: must be >= 0, got {ttl_seconds}")
        request = checkpoints_pb2.SetTtlRequest(path=path)
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        future = self.service.connection.unary("SetCheckpointTtl", request)
        return APIFuture(future, wire.checkpoint_from_proto)

    # ------------------------------------------------------------------ download
    def download_checkpoint_archive(self, path: str) -> APIFuture[bytes]:
        """The checkpoint as a tar archive, in memory (see download_checkpoint for big ones)."""
        request = checkpoints_pb2.ExportCheckpointRequest(path=path)
        future = self.service.connection.stream_call("DownloadCheckpoint", request)
        return APIFuture(future, lambda chunks: b"".join(c.data for c in chunks))

    def archive_chunks(self, path: str) -> Iterator[checkpoints_pb2.DataChunk]:
        """The checkpoint's tar archive as it streams (the first chunk carries total_bytes)."""
        connection = self.service.connection
        with grpc.insecure_channel(connection.target, options=message_options()) as channel:
            stub = scheduler_pb2_grpc.TreadleStub(channel)
            request = checkpoints_pb2.ExportCheckpointRequest(path=path)
            try:
                yield from stub.DownloadCheckpoint(request, metadata=connection.metadata)
            except grpc.RpcError as exc:
                raise _failed(exc) from None

    def download_checkpoint(
        self, path: str, destination: str | os.PathLike[str], progress: Progress | None = None
    ) -> APIFuture[Path]:
        """Stream the checkpoint's tar archive into the file `destination`; `progress` is called
        after every chunk. The file appears only once complete (nothing is left on failure)."""
        target = Path(destination)

        def download() -> Path:
            partial = target.with_name(f".{target.name}.part{os.getpid()}")
            total = done = 0
            try:
                with open(partial, "wb") as out:
                    for chunk in self.archive_chunks(path):
                        total = total or chunk.total_bytes
                        out.write(chunk.data)
                        done += len(chunk.data)
                        if progress is not None:
                            progress(done, total)
                if total and done != total:
                    raise RequestFailedError(
                        "DATA_LOSS", f"archive of {path} ended at {done} of {total} bytes", "server"
                    )
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            return target

        return _now().then(lambda _: download())
