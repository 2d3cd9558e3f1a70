"""RestClient: a tenant's checkpoints and runs (list, delete, TTL, download)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle import wire
from treadle.errors import ValidationError
from treadle.futures import APIFuture
from treadle.types import Checkpoint
from treadle.v1 import checkpoints_pb2

if TYPE_CHECKING:
    from treadle.service_client import ServiceClient


class RestClient:
    """Checkpoint administration for the caller's tenant."""

    def __init__(self, service: ServiceClient) -> None:
        self.service = service

    def list_checkpoints(self, run_id: str = "") -> APIFuture[list[Checkpoint]]:
        """Checkpoints of one run (the training model id), or of all runs when empty."""

        def gather() -> list[Checkpoint]:
            found: list[Checkpoint] = []
            token = ""
            while True:
                request = checkpoints_pb2.ListCheckpointsRequest(
                    run_id=run_id, page_size=500, page_token=token
                )
                page = self.service.connection.unary("ListCheckpoints", request).result()
                found.extend(wire.checkpoint_from_proto(info) for info in page.checkpoints)
                token = page.next_page_token
                if not token:
                    return found

        return APIFuture.completed(None).then(lambda _: gather())

    def list_user_checkpoints(self) -> APIFuture[list[Checkpoint]]:
        """Every checkpoint of the caller's tenant."""
        return self.list_checkpoints("")

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

    def set_checkpoint_ttl(self, path: str, ttl_seconds: int | None) -> APIFuture[Checkpoint]:
        """Keep a checkpoint `ttl_seconds` from now (None keeps it until deleted)."""
        if ttl_seconds is not None and ttl_seconds < 0:
            raise ValidationError(f"ttl_seconds: must be >= 0, got {ttl_seconds}")
        request = checkpoints_pb2.SetTtlRequest(path=path)
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        future = self.service.connection.unary("SetCheckpointTtl", request)
        return APIFuture(future, wire.checkpoint_from_proto)

    def download_checkpoint_archive(self, path: str) -> APIFuture[bytes]:
        """The checkpoint as a tar archive."""
        request = checkpoints_pb2.ExportCheckpointRequest(path=path)
        future = self.service.connection.stream("DownloadCheckpoint", request)
        return APIFuture(future, lambda chunks: b"".join(c.data for c in chunks))
