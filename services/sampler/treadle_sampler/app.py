"""One sampler process: the engine, the adapter cache and the servicer, wired together.

`setup` builds the engine `config` names (off the event loop: loading weights takes seconds)
unless one is given, connects to the checkpoints service adapters come from unless a source is
given, and registers the Sampler servicer; `close` lets go of each in turn. Given engines and
sources (tests share one engine between servers) are the caller's to close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from treadle.v1 import sampler_pb2_grpc
from treadle_runtime.checkpoint_client import CheckpointClient
from treadle_sampler.adapters import AdapterCache, AdapterSource
from treadle_sampler.config import SamplerConfig
from treadle_sampler.engine import SamplingEngine, make_engine
from treadle_sampler.local_adapters import AdapterFolders
from treadle_sampler.service import SERVICE_NAME, SamplerServicer


class SamplerApp:
    """The sampler as a treadle_runtime.server.App."""

    def __init__(
        self,
        config: SamplerConfig,
        *,
        engine: SamplingEngine | None = None,
        source: AdapterSource | None = None,
    ) -> None:
        self.config = config
        self.interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
        self.engine = engine
        self.source = source
        self._owns_engine = engine is None
        self._client: CheckpointClient | None = None  # the checkpoints client opened here
        self._cache: AdapterCache | None = None

    async def setup(self, server: grpc.aio.Server) -> list[str]:
        """Build the engine and the adapter cache, and register the servicer."""
        config = self.config
        if self.engine is None:
            if config.torch_threads:  # e.g. the CPU limit of a container, not the host's cores
                import torch

                torch.set_num_threads(config.torch_threads)
            self.engine = await asyncio.to_thread(make_engine, config)
        if self.source is None and config.checkpoints:
            self.source = self._client = CheckpointClient(config.checkpoints)
        folders = AdapterFolders(config.adapter_dir)
        self._cache = AdapterCache(self.engine, self.source, config.max_adapters, folders)
        servicer = SamplerServicer(self.engine, self._cache, config.max_num_samples)
        sampler_pb2_grpc.add_SamplerServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    async def close(self) -> None:
        """Close the adapter cache, the checkpoints client and an engine built here."""
        if self._cache is not None:
            await self._cache.close()
        if self._client is not None:
            await self._client.close()
        if self._owns_engine and self.engine is not None:
            await self.engine.close()
