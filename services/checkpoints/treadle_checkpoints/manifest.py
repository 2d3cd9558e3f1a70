"""The manifest: the one small JSON object that makes a checkpoint exist.

It holds the CheckpointInfo fields, the generation its files live under and each file's size and
sha256. It is written after every data object and read before any, so readers verify data against
it. The checkpoint's own `sha256` is the digest of its files' digests,

    sha256("".join(f"{name}\\t{sha256}\\n" for name, sha256 in sorted(files)))

so it identifies the content regardless of upload order.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

from google.protobuf import json_format

from treadle.v1 import common_pb2

FORMAT = "treadle-checkpoint/1"
RESERVED_FILE_NAMES = ("metadata.json",)  # the export archive's own entry


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint."""

    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """A checkpoint's metadata and file list."""

    info: common_pb2.CheckpointInfo
    generation: str
    files: list[FileEntry] = field(default_factory=list)

    def expired(self, now: float | None = None) -> bool:
        """Whether its expiry time has passed (an expired checkpoint behaves as missing)."""
        if not self.info.HasField("expires_at"):
            return False
        return self.info.expires_at <= (time.time() if now is None else now)

    def object_name(self, entry: FileEntry) -> str:
        """Key of `entry`'s data object, relative to the checkpoint prefix."""
        return f"{self.generation}/{entry.name}"

    def export_metadata(self) -> bytes:
        """The `metadata.json` of the checkpoint's export archive: its info and file list."""
        document = {
            "checkpoint": json_format.MessageToDict(self.info, preserving_proto_field_name=True),
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(document, indent=2).encode()

    def to_bytes(self) -> bytes:
        """The manifest's JSON form."""
        document = {
            "format": FORMAT,
            "info": json_format.MessageToDict(self.info, preserving_proto_field_name=True),
            "generation": self.generation,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(document, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest; ValueError if it is not one."""
        try:
            document = json.loads(data)
            if document.get("format") != FORMAT:
                raise ValueError(f"unknown manifest format {document.get('format')!r}")
            info = json_format.ParseDict(document["info"], common_pb2.CheckpointInfo())
            files = [
                FileEntry(name=str(f["name"]), size=int(f["size"]), sha256=str(f["sha256"]))
                for f in document["files"]
            ]
            return cls(info=info, generation=str(document["generation"]), files=files)
        except (KeyError, TypeError, json.JSONDecodeError, json_format.ParseError) as exc:
            raise ValueError(f"malformed manifest: {exc}") from None


def checkpoint_digest(files: list[FileEntry]) -> str:
    """The checkpoint's identity: sha256 over its files' names and digests (see module doc)."""
    lines = "".join(f"{f.name}\t{f.sha256}\n" for f in sorted(files, key=lambda f: f.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot be a checkpoint file name, or None when it can."""
    if not name:
        return "is empty"
    if len(name) > 255:
        return "is longer than 255 characters"
    if "/" in name or "\\" in name:
        return f"{name!r} must not contain a path separator"
    if ".." in name or name == ".":
        return f"{name!r} must not contain '..'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} must not contain control characters"
    if name in RESERVED_FILE_NAMES:
        return f"{name!r} is reserved"
    return None
