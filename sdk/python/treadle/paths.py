"""Checkpoint paths: `treadle://{run_id}/weights/{name}` (state) and
`treadle://{run_id}/sampler_weights/{name}` (sampler). `tinker://` is accepted as a synonym."""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMES = ("treadle://", "tinker://")
KINDS = {"weights": "state", "sampler_weights": "sampler"}
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class CheckpointPath:
    """A parsed checkpoint path."""

    run_id: str
    kind: str  # "state" or "sampler"
    name: str

    def __str__(self) -> str:
        folder = "weights" if self.kind == "state" else "sampler_weights"
        return f"treadle://{self.run_id}/{folder}/{self.name}"


def valid_name(name: str) -> bool:
    """Whether `name` can be a run id or checkpoint name (letters, digits, . _ : -)."""
    return bool(_PART.match(name)) and ".." not in name


def parse_path(path: str) -> CheckpointPath:
    """Parse a checkpoint path; ValueError saying what is wrong with it."""
    scheme = next((s for s in SCHEMES if path.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"path {path!r} must start with treadle:// (or tinker://)")
    parts = path[len(scheme) :].split("/")
    if len(parts) != 3 or parts[1] not in KINDS:
        raise ValueError(
            f"path {path!r} must look like treadle://RUN/weights/NAME "
            "or treadle://RUN/sampler_weights/NAME"
        )
    run_id, folder, name = parts
    for label, value in (("run id", run_id), ("name", name)):
        if not valid_name(value):
            raise ValueError(f"path {path!r}: {label} {value!r} is not a valid name")
    return CheckpointPath(run_id=run_id, kind=KINDS[folder], name=name)


def same_weights(a: str, b: str) -> bool:
    """Whether `a` and `b` name the same weights: a checkpoint path in either scheme, or a
    base model's name."""
    if a == b:
        return True
    try:
        return parse_path(a) == parse_path(b)
    except ValueError:
        return False
