"""`treadle up`: becomes healthy on a tiny model, serves it, and stops without orphans on
SIGTERM. (How fast it starts is a figure, not a test: about 10 s on an idle two-core machine.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import treadle


def _descendants(pid: int) -> set[int]:
    children: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(status.parent.name)
            children |= {child, *_descendants(child)}
    return children


def test_up_becomes_healthy_serves_and_stops_cleanly(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "treadle.cli", "up", "--base-model", "treadle/tiny-llama",
        "--port", "0", "--data-dir", str(tmp_path), "--metrics", "false",
    ]  # fmt: skip
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            output.append(line)
            if "Ctrl-C" in line or up.poll() is not None:
                break
        text = "".join(output)
        assert "mesh healthy" in text, text
        endpoint = re.search(r"endpoint\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        key = re.search(r"api key\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        children = _descendants(up.pid)
        assert len(children) >= 5  # weed, checkpoints, trainer, sampler, scheduler
        with treadle.ServiceClient(base_url=endpoint, api_key=key) as service:
            models = service.get_server_capabilities().supported_models
            assert [m.model_name for m in models] == ["treadle/tiny-llama"]
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    assert up.returncode == 0
    time.sleep(0.5)
    alive = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"orphans left: {alive}"
