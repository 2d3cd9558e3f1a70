"""Object keys of checkpoints in the bucket.

    {tenant}/{run_id}/{weights|sampler_weights}/{name}/manifest.json
    {tenant}/{run_id}/{weights|sampler_weights}/{name}/{generation}/{file}

The tenant comes first so that scoping is a key prefix: one tenant's keys can never name
another's. Each save writes its files under a fresh generation and then replaces the manifest,
so a crash mid-save or mid-overwrite leaves the previous manifest (or none) pointing at complete
data; files of generations no manifest names are garbage the sweep removes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

from treadle.paths import CheckpointPath

MANIFEST = "manifest.json"
_FOLDERS = {"state": "weights", "sampler": "sampler_weights"}
_KINDS = {folder: kind for kind, folder in _FOLDERS.items()}


def tenant_segment(tenant: str) -> str:
    """`tenant` as one key segment: percent-encoded, never '/', '.' or '..'."""
    return quote(tenant, safe="").replace(".", "%2E")


def tenant_prefix(tenant: str) -> str:
    """Prefix of every key of `tenant`."""
    return tenant_segment(tenant) + "/"


def run_prefix(tenant: str, run_id: str) -> str:
    """Prefix of every key of one run of `tenant`."""
    return f"{tenant_segment(tenant)}/{run_id}/"


def checkpoint_prefix(tenant: str, path: CheckpointPath) -> str:
    """Prefix of every key of one checkpoint (its manifest and all its generations)."""
    return f"{tenant_segment(tenant)}/{path.run_id}/{_FOLDERS[path.kind]}/{path.name}/"


def manifest_key(tenant: str, path: CheckpointPath) -> str:
    """Key of a checkpoint's manifest: the checkpoint exists exactly when this object does."""
    return checkpoint_prefix(tenant, path) + MANIFEST


def new_generation() -> str:
    """A fresh, time-ordered generation id for one save."""
    return f"g{time.time_ns():x}{os.urandom(4).hex()}"


@dataclass(frozen=True)
class KeyParts:
    """What a key inside a checkpoint says about itself."""

    tenant: str
    path: CheckpointPath
    prefix: str  # the checkpoint prefix, ending in '/'
    rest: str  # MANIFEST or "{generation}/{file}"


def parse_key(key: str) -> KeyParts | None:
    """Split a key of the layout above; None for keys outside it."""
    parts = key.split("/", 4)
    if len(parts) != 5 or parts[2] not in _KINDS or not all(parts):
        return None
    tenant, run_id, folder, name, rest = parts
    prefix = "/".join(parts[:4]) + "/"
    path = CheckpointPath(run_id=run_id, kind=_KINDS[folder], name=name)
    return KeyParts(tenant=unquote(tenant), path=path, prefix=prefix, rest=rest)
