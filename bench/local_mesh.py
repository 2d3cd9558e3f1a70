"""A local mesh for benchmarks: real processes, one API key per tenant, and metric scraping."""

from __future__ import annotations

import json
import platform
import re
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from treadle_runtime.launcher import LocalMesh, UpConfig

RESULTS = Path(__file__).resolve().parents[1] / "results"


@contextmanager
def local_mesh(
    base_model: str,
    tenants: int,
    torch_threads: int = 0,
    gateway: bool = False,
    sampler_engine: str = UpConfig.sampler_engine,
) -> Iterator[tuple[LocalMesh, list[str]]]:
    """A mesh with `tenants` extra API keys (tml-bench-0 ... ) and metrics on; `torch_threads`
    per trainer and sampler (0: the launcher's default, the cores shared equally); the tinker
    SDK's gateway too when asked for (mesh.gateway_url); samplers on `sampler_engine`."""
    keys = [f"tml-bench-{i}" for i in range(tenants)]
    with tempfile.TemporaryDirectory(prefix="treadle-bench-") as data_dir:
        config = UpConfig(
            base_model=base_model,
            port=0,
            gateway_port=0 if gateway else -1,
            data_dir=data_dir,
            metrics=True,
            torch_threads=torch_threads,
            sampler_engine=sampler_engine,
            api_keys=",".join(f"{k}=tenant-{i}" for i, k in enumerate(keys)),
        )
        with LocalMesh(config) as mesh:
            yield mesh, keys


def scrape(mesh: LocalMesh, service: str) -> dict[str, float]:
    """A service's Prometheus samples as {"name{labels}": value}."""
    port = mesh.service(service).metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def histogram(
    samples: dict[str, float], name: str
) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets [(le, count)], sum, count) of a histogram, summed over labels."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for key, value in samples.items():
        if key.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', key).group(1)  # type: ignore[union-attr]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
        elif key.startswith(name + "_sum"):
            total += value
        elif key.startswith(name + "_count"):
            count += value
    return sorted(buckets.items()), total, count


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Quantile of a cumulative histogram, interpolated linearly within its bucket."""
    total = buckets[-1][1]
    target = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= target:
            if bound == float("inf"):
                return lower_bound
            span = count - lower_count
            share = (target - lower_count) / span if span else 0.0
            return lower_bound + share * (bound - lower_bound)
        lower_bound, lower_count = bound, count
    return lower_bound


def machine() -> str:
    """One line describing this machine."""
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_results(name: str, payload: dict[str, object]) -> Path:
    """Write results/<name>.json and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
