"""One checkpoints process: the store, the servicer and the expiry sweep, wired together.

The bucket is bootstrapped at startup, but an object store that is not up yet does not stop the
service: it logs, serves UNAVAILABLE, and bootstraps on the first call that reaches the store
(services and MinIO start in any order in Kubernetes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc

from treadle_checkpoints.config import CheckpointsConfig
from treadle_checkpoints.expiry import ExpirySweeper
from treadle_checkpoints.s3_store import S3Store
from treadle_checkpoints.service import CheckpointsServicer, add_to_server
from treadle_runtime.errors import OpError

log = logging.getLogger(__name__)

SERVICE_NAME = "treadle.v1.Checkpoints"


class CheckpointsApp:
    """The checkpoints service as a treadle_runtime.server.App."""

    def __init__(self, config: CheckpointsConfig) -> None:
        self.config = config
        self.interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
        self.store = S3Store.from_config(config)
        self.sweeper = ExpirySweeper(self.store, orphan_grace_seconds=config.orphan_grace_seconds)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sweep_task: asyncio.Task[None] | None = None

    async def setup(self, server: grpc.aio.Server) -> list[str]:
        """Bootstrap the bucket, register the servicer and start the sweep."""
        self.loop = asyncio.get_running_loop()
        try:
            await self.store.ensure_bucket()
        except OpError as exc:
            log.warning("object store not ready; will retry", extra={"reason": exc.message})
        servicer = CheckpointsServicer(self.store, self.config)
        add_to_server(servicer, server)
        if self.config.sweep_interval_seconds > 0:
            sweep = self.sweeper.run_forever(self.config.sweep_interval_seconds)
            self._sweep_task = asyncio.create_task(sweep, name="expiry-sweep")
        return [SERVICE_NAME]

    async def close(self) -> None:
        """Stop the sweep and the store's readers."""
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep_task
            self._sweep_task = None
        self.store.close()
