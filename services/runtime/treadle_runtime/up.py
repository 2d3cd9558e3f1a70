"""`treadle up` as a command: start the local mesh, print how to reach it, stop on Ctrl-C."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from treadle_runtime.config import load_config_or_exit
from treadle_runtime.launcher import LocalMesh, UpConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mesh until SIGINT or SIGTERM; returns the exit status."""
    config = load_config_or_exit(UpConfig, service="up", argv=argv)
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    started = time.monotonic()
    mesh = LocalMesh(config)
    print(f"treadle up: starting the mesh for {config.base_model} ...", flush=True)
    try:
        mesh.start()
    except (RuntimeError, OSError) as exc:
        mesh.stop()
        print(f"treadle up: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"treadle up: mesh healthy in {time.monotonic() - started:.1f}s\n"
        f"  endpoint   {mesh.endpoint}\n"
        f"  api key    {mesh.api_key}\n"
        f"  logs       {mesh.data_dir / 'logs'}\n"
        f"  export TREADLE_BASE_URL={mesh.endpoint} TREADLE_API_KEY={mesh.api_key}\n"
        + (
            f"  gateway    {mesh.gateway_url} (the official tinker SDK)\n"
            f"  export TINKER_BASE_URL={mesh.gateway_url} TINKER_API_KEY={mesh.api_key}\n"
            if mesh.gateway_url
            else ""
        )
        + (
            f"  tokenizers for clients: export HF_HOME={config.hub_cache} HF_HUB_OFFLINE=1\n"
            if config.hub_cache
            else ""
        )
        + "Ctrl-C stops everything.",
        flush=True,
    )
    status = 0
    while not stopping:
        failed = mesh.failed()
        if failed is not None:
            print(
                f"treadle up: {failed.name} exited ({failed.process.returncode}); stopping\n"
                f"{failed.log_tail()}",
                file=sys.stderr,
            )
            status = 1
            break
        time.sleep(0.5)
    print("treadle up: stopping ...", flush=True)
    mesh.stop()
    print("treadle up: stopped", flush=True)
    return status
