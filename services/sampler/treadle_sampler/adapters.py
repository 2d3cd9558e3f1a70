"""The LRU cache of loaded adapters, keyed by (tenant, sampler checkpoint path).

An adapter is fetched from the checkpoints service on first use (`source.get(tenant, path)`,
which is `CheckpointClient.get`), checked against the served base model, written to local disk as
a PEFT folder (`local_adapters.py`) and loaded by the engine from there, under a fresh key. A
request pins its adapter for as long as it runs; when more than `capacity` adapters are loaded,
the least recently used unpinned ones are evicted from the engine and their folders deleted
(while every one is pinned the cache briefly holds more). Concurrent requests for an adapter that
is not yet loaded share one fetch. Checkpoints are immutable, so a loaded adapter never goes
stale.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import grpc

from treadle.v1 import common_pb2
from treadle_runtime.errors import OpError, invalid
from treadle_sampler import metrics
from treadle_sampler.engine import SamplingEngine
from treadle_sampler.local_adapters import AdapterFolders

_keys = itertools.count()  # engine keys, unique even when caches share an engine


class AdapterSource(Protocol):
    """Where adapter files come from (the checkpoints service client)."""

    async def get(
        self, tenant: str, path: str
    ) -> tuple[common_pb2.CheckpointInfo, dict[str, bytes]]:
        """The checkpoint's metadata and files; OpError (NOT_FOUND, UNAVAILABLE, ...) if not."""
        ...


@dataclass
class _Entry:
    key: str  # the engine's name for it
    path: str
    pins: int = 0


class AdapterCache:
    """Loads adapters into an engine on demand and evicts the least recently used."""

    def __init__(
        self,
        engine: SamplingEngine,
        source: AdapterSource | None,
        capacity: int,
        folders: AdapterFolders,
    ) -> None:
        self.engine = engine
        self.source = source
        self.capacity = capacity
        self.folders = folders
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._loading: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def paths(self) -> list[str]:
        """Paths of the loaded adapters, least recently used first."""
        return [entry.path for entry in self._entries.values()]

    @asynccontextmanager
    async def use(self, tenant: str, path: str) -> AsyncIterator[str]:
        """The engine key of adapter `path` of `tenant`, loaded and pinned for the block."""
        entry = await self._acquire((tenant, path))
        try:
            yield entry.key
        finally:
            entry.pins -= 1
            if len(self._entries) > self.capacity:
                task = asyncio.ensure_future(self._shrink())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _acquire(self, ident: tuple[str, str]) -> _Entry:
        first = True
        while True:
            entry = self._entries.get(ident)
            if entry is not None:
                entry.pins += 1
                self._entries.move_to_end(ident)
                if first:
                    metrics.ADAPTER_CACHE_HITS.inc()
                await self._shrink()
                return entry
            if first:
                metrics.ADAPTER_CACHE_MISSES.inc()
            first = False
            loading = self._loading.get(ident)
            if loading is None:
                loading = asyncio.ensure_future(self._load(ident))
                self._loading[ident] = loading
                loading.add_done_callback(lambda done: self._loaded(ident, done))
            await asyncio.shield(loading)

    def _loaded(self, ident: tuple[str, str], done: asyncio.Future[None]) -> None:
        self._loading.pop(ident, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter went away

    async def _load(self, ident: tuple[str, str]) -> None:
        tenant, path = ident
        if self.source is None:
            raise OpError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "model_path: this sampler has no checkpoints service configured; "
                "it serves the base model only",
                "model_path",
            )
        started = time.perf_counter()
        try:
            info, files = await self.source.get(tenant, path)
        except OpError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                raise OpError(exc.code, f"model_path: {exc.message}", "model_path") from None
            raise
        served = self.engine.spec.name
        if info.base_model and info.base_model != served:
            message = f"{path} is an adapter of {info.base_model}; this sampler serves {served}"
            raise invalid("model_path", message)
        key = f"adapter{next(_keys)}"
        try:
            folder = await asyncio.to_thread(self.folders.write, key, files)
            await self.engine.load_adapter(key, folder)
        except ValueError as exc:
            self.folders.remove(key)
            raise invalid("model_path", f"{path}: {exc}") from None
        except BaseException:
            self.folders.remove(key)
            raise
        self._entries[ident] = _Entry(key, path)
        metrics.ADAPTER_LOADS.inc()
        metrics.ADAPTER_LOAD_SECONDS.observe(time.perf_counter() - started)
        metrics.ADAPTERS_LOADED.set(len(self._entries))

    async def close(self) -> None:
        """Evict every adapter no request is using, and delete the local folders."""
        self.capacity = 0
        await self._shrink()
        self.folders.close()

    async def _shrink(self) -> None:
        while len(self._entries) > self.capacity:
            victim = next((i for i, e in self._entries.items() if e.pins == 0), None)
            if victim is None:
                return
            entry = self._entries.pop(victim)
            metrics.ADAPTER_EVICTIONS.inc()
            metrics.ADAPTERS_LOADED.set(len(self._entries))
            try:
                await self.engine.evict(entry.key)
            finally:
                self.folders.remove(entry.key)
