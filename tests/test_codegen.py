"""Generated code must match its sources (protos/, treadle.contract): regenerate into a temp dir
and compare byte for byte."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.go  # scripts/proto.sh writes the Go code too, with Debian's Go tools

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"sdk/python/treadle/v1": ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"),
             "sdk/go/treadlev1": (".pb.go",), "sdk/go/client": ("_gen.go",),
             "services/gateway/treadle_gateway": ("_pb2.py", "_pb2.pyi")}  # fmt: skip


def _files(root: Path, folder: str, suffixes: tuple[str, ...]) -> set[str]:
    return {p.name for p in (root / folder).iterdir() if p.name.endswith(suffixes)}


def test_generated_code_is_current(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "scripts" / "proto.sh"), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    for folder, suffixes in GENERATED.items():
        committed = _files(ROOT, folder, suffixes)
        fresh = _files(tmp_path, folder, suffixes)
        assert committed == fresh, f"{folder}: run `make proto` (files differ: {committed ^ fresh})"
        for name in sorted(fresh):
            same = filecmp.cmp(ROOT / folder / name, tmp_path / folder / name, shallow=False)
            assert same, f"{folder}/{name} is stale against protos/: run `make proto`"
