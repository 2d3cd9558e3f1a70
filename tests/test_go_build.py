"""The generated Go code compiles offline against Debian's Go packages (GOPATH mode)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_go_package_builds(tmp_path: Path) -> None:
    source = tmp_path / "src" / "treadle" / "sdk"
    source.mkdir(parents=True)
    (source / "go").symlink_to(ROOT / "sdk" / "go")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{tmp_path}:/usr/share/gocode",
        "GOCACHE": str(tmp_path / "cache"),
        "GOFLAGS": "-mod=",
    }
    done = subprocess.run(
        ["go", "build", "./treadlev1/"],
        cwd=source / "go",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
