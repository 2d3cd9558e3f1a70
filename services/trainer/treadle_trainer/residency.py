"""Which adapters live on the device: a budget, least-recently-used eviction, and offload stores.

Up to `budget` adapters are resident (0 = no limit). Before an adapter is used, `require` brings
it in, first offloading the least recently used adapters that the current operation does not
need. An offloaded adapter keeps everything it owns (weights, pending gradients, Adam moments;
see adapters.py), stored bit for bit either in host memory (pinned when the device is a GPU)
or as a safetensors file in a spill folder, the natural choice when the device is the CPU and
host memory is the very memory a budget protects. A tenant therefore never loses state when
others arrive; it only waits for its tensors to come back.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file

from treadle_trainer import metrics
from treadle_trainer.adapters import Adapter

OFFLOAD_KINDS = ("auto", "host", "disk")


class OffloadStore(Protocol):
    """Where offloaded adapters' tensors wait."""

    def put(self, model_id: str, tensors: dict[str, torch.Tensor]) -> None: ...

    def take(self, model_id: str) -> dict[str, torch.Tensor]: ...

    def discard(self, model_id: str) -> None: ...

    def close(self) -> None: ...


class HostStore:
    """Tensors copied to host memory (pinned for fast copies back when the device is a GPU)."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self._held: dict[str, dict[str, torch.Tensor]] = {}

    def put(self, model_id: str, tensors: dict[str, torch.Tensor]) -> None:
        """Keep host copies of `tensors`."""
        self._held[model_id] = {name: self._host(t) for name, t in tensors.items()}

    def _host(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type == "cpu":
            return tensor
        copy = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=self.pin)
        return copy.copy_(tensor)

    def take(self, model_id: str) -> dict[str, torch.Tensor]:
        """The tensors stored for `model_id`, forgetting them."""
        return self._held.pop(model_id)

    def discard(self, model_id: str) -> None:
        """Forget `model_id`'s tensors if any."""
        self._held.pop(model_id, None)

    def close(self) -> None:
        """Forget everything."""
        self._held.clear()


class DiskStore:
    """One safetensors file per offloaded adapter in `folder` (a private temporary one if empty)."""

    def __init__(self, folder: str = "") -> None:
        self._owned = not folder
        self.folder: Path | None = Path(folder) if folder else None  # created on first use
        self._files: dict[str, Path] = {}
        self._ids = itertools.count()

    def put(self, model_id: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write `tensors` to this adapter's file."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="treadle-offload-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"adapter-{next(self._ids)}.safetensors"
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}, path)
        self._files[model_id] = path

    def take(self, model_id: str) -> dict[str, torch.Tensor]:
        """Read this adapter's tensors back and delete the file."""
        path = self._files.pop(model_id)
        tensors = load_file(path)
        path.unlink()
        return tensors

    def discard(self, model_id: str) -> None:
        """Delete this adapter's file if any."""
        path = self._files.pop(model_id, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete every file (and the folder when it is a private one)."""
        for model_id in list(self._files):
            self.discard(model_id)
        if self._owned and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def offload_store(kind: str, device: torch.device, folder: str = "") -> OffloadStore:
    """`auto`: host memory next to a GPU, a spill folder next to the CPU."""
    if kind not in OFFLOAD_KINDS:
        raise ValueError(f"offload: {kind!r} is not one of {', '.join(OFFLOAD_KINDS)}")
    if kind == "auto":
        kind = "host" if device.type == "cuda" else "disk"
    if kind == "host":
        return HostStore(pin=device.type == "cuda")
    return DiskStore(folder)


class Residency:
    """The resident set of one engine's adapters, in least- to most-recently-used order."""

    def __init__(self, budget: int, store: OffloadStore, device: torch.device) -> None:
        if budget < 0:
            raise ValueError(f"max_resident_adapters: must be >= 0, got {budget}")
        self.budget = budget
        self.store = store
        self.device = device
        self.resident: OrderedDict[str, Adapter] = OrderedDict()
        self.offloaded: dict[str, Adapter] = {}
        self.high_water = 0  # most adapters ever resident at once

    def reserve(self) -> None:
        """Make room for one more adapter (before creating its tensors on the device)."""
        self._make_room(1, keep=())

    def admit(self, adapter: Adapter) -> None:
        """Register a new adapter, created on the device after `reserve`."""
        self._make_room(1, keep=())
        self.resident[adapter.model_id] = adapter
        self._changed()

    def require(self, adapters: Iterable[Adapter]) -> None:
        """Make every adapter in `adapters` resident and most recently used."""
        needed = {a.model_id: a for a in adapters}
        if self.budget and len(needed) > self.budget:
            raise ValueError(f"{len(needed)} adapters at once exceed the budget {self.budget}")
        missing = [a for a in needed.values() if not a.resident]
        self._make_room(len(missing), keep=needed)
        for adapter in missing:
            adapter.restore_tensors(self.store.take(adapter.model_id), self.device)
            del self.offloaded[adapter.model_id]
            self.resident[adapter.model_id] = adapter
            metrics.ADAPTER_MOVES.labels("load").inc()
        for model_id in needed:
            self.resident.move_to_end(model_id)
        self._changed()

    def forget(self, adapter: Adapter) -> None:
        """Drop a released adapter wherever it is."""
        self.resident.pop(adapter.model_id, None)
        if self.offloaded.pop(adapter.model_id, None) is not None:
            self.store.discard(adapter.model_id)
        self._changed()

    def close(self) -> None:
        """Release the offload store."""
        self.store.close()

    def _make_room(self, incoming: int, keep: Iterable[str]) -> None:
        if not self.budget:
            return
        keep = set(keep)
        for model_id in list(self.resident):
            if len(self.resident) + incoming <= self.budget:
                break
            if model_id in keep:
                continue
            adapter = self.resident.pop(model_id)
            self.store.put(model_id, adapter.tensors())
            adapter.drop_tensors()
            self.offloaded[model_id] = adapter
            metrics.ADAPTER_MOVES.labels("offload").inc()

    def _changed(self) -> None:
        self.high_water = max(self.high_water, len(self.resident))
        metrics.ADAPTERS.set(len(self.resident))
        metrics.ADAPTERS_HELD.set(len(self.resident) + len(self.offloaded))
