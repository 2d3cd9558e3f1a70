"""Checkpoint admin on the public API: the checkpoints service's calls, on the caller's behalf.

Each call is forwarded to the checkpoints service with the tenant that the caller's API key maps
to, whatever tenant the request carries, so a tenant only ever sees and changes its own
checkpoints; tenant names are blanked in what goes back. The checkpoints service's status and
message are passed to the client unchanged (treadle_runtime.errors maps every failure).

Key decision: these are the `Treadle` servicer's own handlers, written as a mixin that
`TreadleService` inherits, so that gRPC dispatches to them directly; the mixin relies only on the
servicer's `keys` and `checkpoints` attributes, declared below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from treadle.paths import parse_path
from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2
from treadle_runtime.auth import ApiKeys
from treadle_runtime.errors import OpError, rpc, streaming_rpc


class CheckpointAdmin:
    """The checkpoint admin methods of the `Treadle` servicer."""

    keys: ApiKeys
    checkpoints: checkpoints_pb2_grpc.CheckpointsAsyncStub | None  # None: none configured

    def _require_checkpoints(self) -> checkpoints_pb2_grpc.CheckpointsAsyncStub:
        if self.checkpoints is None:
            raise OpError(grpc.StatusCode.UNAVAILABLE, "no checkpoints service is configured")
        return self.checkpoints

    async def _checkpoint_info(self, tenant: str, path: str) -> common_pb2.CheckpointInfo:
        """Metadata of a tenant's checkpoint (NOT_FOUND when it is not the tenant's)."""
        parsed = parse_path(path)
        checkpoints = self._require_checkpoints()
        token = ""
        while True:
            page = await checkpoints.List(
                checkpoints_pb2.ListCheckpointsRequest(
                    tenant=tenant, run_id=parsed.run_id, page_size=500, page_token=token
                )
            )
            for info in page.checkpoints:
                if info.path == str(parsed):
                    return info
            token = page.next_page_token
            if not token:
                raise OpError(grpc.StatusCode.NOT_FOUND, f"path: no checkpoint {path!r}", "path")

    @rpc()
    async def ListCheckpoints(
        self, request: checkpoints_pb2.ListCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> checkpoints_pb2.ListCheckpointsResponse:
        request.tenant = self.keys.tenant(context)
        response = await self._require_checkpoints().List(request)
        for info in response.checkpoints:
            info.tenant = ""
        return response

    @rpc()
    async def DeleteCheckpoints(
        self, request: checkpoints_pb2.DeleteCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> checkpoints_pb2.DeleteCheckpointsResponse:
        request.tenant = self.keys.tenant(context)
        return await self._require_checkpoints().Delete(request)

    @rpc()
    async def SetCheckpointTtl(
        self, request: checkpoints_pb2.SetTtlRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.CheckpointInfo:
        request.tenant = self.keys.tenant(context)
        response = await self._require_checkpoints().SetTtl(request)
        response.tenant = ""
        return response

    @streaming_rpc()
    async def DownloadCheckpoint(
        self, request: checkpoints_pb2.ExportCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[checkpoints_pb2.DataChunk]:
        request.tenant = self.keys.tenant(context)
        async for chunk in self._require_checkpoints().Export(request):
            yield chunk
