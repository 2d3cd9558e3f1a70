"""The expiry sweep: the exact TTL mechanism, which works on any S3 server.

Every `sweep_interval_seconds` it lists the bucket once and, per checkpoint prefix:
- a manifest whose `expires_at` has passed is deleted, then that generation's data objects
  (manifest first, so the checkpoint vanishes at once and never shows up half-deleted);
- data objects no manifest points at (a save that crashed, or the previous generation of an
  overwrite) are deleted once older than `orphan_grace_seconds`, which leaves saves in progress
  alone.
Manifests are re-read only when their ETag changes, so an idle bucket costs one listing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from treadle_checkpoints import layout, metrics
from treadle_checkpoints.manifest import Manifest
from treadle_checkpoints.s3_store import S3Store, StoredObject
from treadle_runtime.errors import OpError

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What one sweep removed."""

    expired: list[str] = field(default_factory=list)  # checkpoint paths
    orphans_deleted: int = 0


@dataclass(frozen=True)
class _Facts:
    etag: str
    expires_at: float | None
    generation: str


class ExpirySweeper:
    """Deletes expired checkpoints and unreferenced data objects from one store."""

    def __init__(self, store: S3Store, *, orphan_grace_seconds: float = 3600.0) -> None:
        self.store = store
        self.orphan_grace_seconds = orphan_grace_seconds
        self._facts: dict[str, _Facts] = {}

    async def run_forever(self, interval_seconds: float) -> None:
        """Sweep every `interval_seconds` until cancelled; a failed sweep is logged and retried."""
        while True:
            try:
                result = await self.sweep_once()
                if result.expired or result.orphans_deleted:
                    log.info(
                        "sweep",
                        extra={"expired": len(result.expired), "orphans": result.orphans_deleted},
                    )
            except OpError as exc:
                log.warning("sweep failed", extra={"reason": exc.message})
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(interval_seconds)

    async def sweep_once(self, now: float | None = None) -> SweepResult:
        """One pass over the bucket."""
        now = time.time() if now is None else now
        await self.store.ensure_bucket()
        manifests: dict[str, StoredObject] = {}
        data: dict[str, list[tuple[str, StoredObject]]] = defaultdict(list)
        for obj in await self.store.list(""):
            parts = layout.parse_key(obj.key)
            if parts is None:
                continue  # not ours: leave it alone
            if parts.rest == layout.MANIFEST:
                manifests[parts.prefix] = obj
            else:
                data[parts.prefix].append((parts.rest, obj))
        self._facts = {k: v for k, v in self._facts.items() if k in manifests}
        result = SweepResult()
        for prefix in sorted(set(manifests) | set(data)):
            objects = data.get(prefix, [])
            generation = None
            if prefix in manifests:
                facts = await self._facts_of(manifests[prefix])
                if facts is None:
                    continue  # vanished or unreadable since the listing: look again next time
                if facts.expires_at is not None and facts.expires_at <= now:
                    path = await self._expire(prefix, objects, now)
                    if path is not None:
                        result.expired.append(path)
                    continue
                generation = facts.generation
            stale = [
                obj.key
                for rest, obj in objects
                if (generation is None or not rest.startswith(generation + "/"))
                and now - obj.last_modified > self.orphan_grace_seconds
            ]
            if stale:
                await self.store.delete(stale)
                metrics.ORPHANS_DELETED.inc(len(stale))
                result.orphans_deleted += len(stale)
        return result

    async def _facts_of(self, obj: StoredObject) -> _Facts | None:
        cached = self._facts.get(obj.key)
        if cached is not None and cached.etag == obj.etag:
            return cached
        manifest = await self._read(obj.key)
        if manifest is None:
            return None
        expires_at = manifest.info.expires_at if manifest.info.HasField("expires_at") else None
        facts = _Facts(etag=obj.etag, expires_at=expires_at, generation=manifest.generation)
        self._facts[obj.key] = facts
        return facts

    async def _read(self, key: str) -> Manifest | None:
        raw = await self.store.read(key)
        if raw is None:
            return None
        try:
            return Manifest.from_bytes(raw)
        except ValueError as exc:
            log.warning("unreadable manifest", extra={"key": key, "reason": str(exc)})
            return None

    async def _expire(
        self, prefix: str, objects: list[tuple[str, StoredObject]], now: float
    ) -> str | None:
        """Delete an expired checkpoint, re-checking the manifest first (it may just have been
        replaced by a new save or given a new TTL)."""
        key = prefix + layout.MANIFEST
        manifest = await self._read(key)
        if manifest is None or not manifest.expired(now):
            self._facts.pop(key, None)
            return None
        await self.store.delete([key])
        self._facts.pop(key, None)
        mine = [obj.key for rest, obj in objects if rest.startswith(manifest.generation + "/")]
        await self.store.delete(mine)
        metrics.EXPIRED.inc()
        log.info("expired", extra={"path": manifest.info.path, "tenant": manifest.info.tenant})
        return manifest.info.path
