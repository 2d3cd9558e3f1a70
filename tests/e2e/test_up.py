"""`treadle up`: becomes healthy on a tiny model, serves it, and stops without orphans on
SIGTERM; on an empty model cache it prepares SmolLM2 once, first, and comes up healthy. (How fast
it starts is a figure, not a test: about 10 s on an idle two-core machine on a tiny model.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import treadle
from treadle import types
from treadle_models.cache import MARKER

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


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


@contextmanager
def treadle_up(
    base_model: str, data_dir: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, treadle.ServiceClient, set[int]]]:
    """Run `treadle up` until it says it is healthy; yields its output so far, a client and its
    processes, then stops it with SIGTERM and checks it exits 0."""
    command = [
        sys.executable, "-m", "treadle.cli", "up", "--base-model", base_model,
        "--port", "0", "--gateway-port", "0", "--data-dir", str(data_dir), "--metrics", "false",
    ]  # fmt: skip
    up = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
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
        with treadle.ServiceClient(base_url=endpoint, api_key=key) as service:
            yield text, service, children
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    assert up.returncode == 0


def test_up_becomes_healthy_serves_and_stops_cleanly(tmp_path: Path) -> None:
    with treadle_up("treadle/tiny-llama", tmp_path) as (text, service, children):
        assert len(children) >= 6  # weed, checkpoints, trainer, sampler, scheduler, gateway
        models = service.get_server_capabilities().supported_models
        assert [m.model_name for m in models] == ["treadle/tiny-llama"]
        export = re.search(r"export TINKER_BASE_URL=(\S+) TINKER_API_KEY=(tml-\S+)", text)
        assert export is not None, text
        with urllib.request.urlopen(f"{export.group(1)}/api/v1/healthz", timeout=10) as reply:
            assert json.loads(reply.read()) == {"status": "ok"}
    time.sleep(0.5)
    alive = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"orphans left: {alive}"


def test_up_on_an_empty_cache_prepares_smollm2_once_then_serves_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "TREADLE_CACHE_DIR": str(cache)}
    with treadle_up(SMOLLM2, tmp_path / "up", env) as (text, service, _):
        assert text.index(f"preparing model {SMOLLM2} ...") < text.index("mesh healthy")
        models = service.get_server_capabilities().supported_models
        assert [m.model_name for m in models] == [SMOLLM2]
        prompt = types.ModelInput.from_ints(list(range(100, 110)))
        sampler = service.create_sampling_client(base_model=SMOLLM2)
        params = types.SamplingParams(max_tokens=4, temperature=0.0)
        assert len(sampler.sample(prompt, 1, params).result().sequences[0].tokens) >= 1
    folder = cache / "models" / "SmolLM2-135M-Instruct"
    assert (folder / MARKER).exists() and (folder / "config.json").exists()
    assert [p.name for p in folder.parent.iterdir() if ".tmp" in p.name] == []
