"""Launching an SGLang server for the sampler: its command line, its model folder, readiness.

Used when `engine=sglang` and no `sglang_url` is configured (a GPU machine with SGLang
installed). The server is started the way SGLang's LoRA docs start it, with dynamic adapter
loading in mind: `--enable-lora`, `--max-loras-per-batch`, `--max-lora-rank` and
`--lora-target-modules all` (adapters arrive later through /load_lora_adapter, so their rank and
modules cannot be inferred from `--lora-paths`), plus `--enable-deterministic-inference` so that
`sampling_seed` is honoured. SGLang loads a Hugging Face folder: a local folder is used as is,
SmolLM2 from its converted cache, and the tiny test models are saved once to the model cache.
"""

from __future__ import annotations

import logging
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from treadle_models.devices import dtype_name

if TYPE_CHECKING:
    from treadle_sampler.config import SamplerConfig

log = logging.getLogger(__name__)


def model_folder(base_model: str) -> Path:
    """A Hugging Face folder of `base_model`'s source ("NAME=SOURCE" or "SOURCE") that SGLang
    can load."""
    from treadle_models import cache
    from treadle_models.sources import (
        SMOLLM2,
        TINY_CONFIGS,
        load_model,
        load_tokenizer,
        resolve,
        smollm2_dir,
    )

    source = resolve(base_model).source
    if source == SMOLLM2:
        return smollm2_dir()
    if source not in TINY_CONFIGS:
        return Path(source)

    def build(folder: Path) -> None:
        load_model(source).save_pretrained(folder)
        try:
            load_tokenizer(source).save_pretrained(folder)
        except (OSError, ValueError) as exc:
            log.warning("tiny model saved without a tokenizer", extra={"reason": str(exc)})

    # several samplers of one model may start at once: cached_folder builds it once
    return cache.cached_folder(cache.model_folder(source.replace("/", "--")), build)


def launch_command(
    config: SamplerConfig, model_path: Path, port: int, python: str = sys.executable
) -> list[str]:
    """The `python -m sglang.launch_server ...` command line of a sampler's SGLang server."""
    return [
        python, "-m", "sglang.launch_server",
        "--model-path", str(model_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", dtype_name(config.dtype, "cuda"),  # SGLang runs on GPUs
        "--enable-lora",
        "--max-loras-per-batch", str(config.sglang_max_loras_per_batch),
        "--max-lora-rank", str(config.sglang_max_lora_rank),
        "--lora-target-modules", "all",
        "--enable-deterministic-inference",
        *shlex.split(config.sglang_args),
    ]  # fmt: skip


class LaunchedServer:
    """An HTTP server process started by the sampler and stopped with it."""

    def __init__(self, command: Sequence[str], url: str) -> None:
        self.url = url
        self.process = subprocess.Popen(list(command))

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(config: SamplerConfig) -> LaunchedServer:
    """Start the SGLang server `config` describes (not yet ready: see `wait_healthy`)."""
    port = config.sglang_port or _free_port()
    command = launch_command(config, model_folder(config.base_model), port)
    log.info("launching SGLang", extra={"command": " ".join(command)})
    return LaunchedServer(command, f"http://127.0.0.1:{port}")


def wait_healthy(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll GET {url}/health until it answers 200."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"SGLang server exited with status {process.returncode}")
        try:
            with opener.open(url.rstrip("/") + "/health", timeout=5) as response:
                if response.status == 200:
                    return
                last = f"status {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.2)
    raise RuntimeError(f"SGLang server {url} not healthy after {timeout:.0f}s ({last})")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
