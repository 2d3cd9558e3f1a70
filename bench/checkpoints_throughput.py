"""Checkpoint save/load throughput through the Checkpoints service versus a plain S3 client.

For adapters of 1, 10 and 100 MB, against one SeaweedFS on loopback:
- treadle: CheckpointClient.put / .get (what trainer and sampler call) to a checkpoints process:
  chunked gRPC stream -> service (sha256 of every byte, multipart upload, manifest) -> S3, and
  back with the sha256 verified;
- plain: the `minio` client's put_object / get_object of the same bytes, in this process.
Each cell is the median of several runs, measured alternately in the same run. Target: treadle
throughput >= 0.8x the plain client's.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from local_mesh import write_results
from minio import Minio

from treadle.v1 import common_pb2
from treadle_runtime.checkpoint_client import CheckpointClient
from treadle_runtime.launcher import free_port, wait_healthy
from treadle_runtime.seaweed import S3Server, start_s3_server

MB = 1_000_000
TENANT = "bench"
FILE = "adapter_model.safetensors"
PLAIN_BUCKET = "plain-minio"


def _seconds(run: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def _checkpoints_process(s3: S3Server, data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [
        sys.executable, "-m", "treadle_checkpoints", "--port", str(port),
        "--s3-endpoint", s3.endpoint, "--s3-access-key", s3.access_key,
        "--s3-secret-key", s3.secret_key, "--sweep-interval-seconds", "0",
        "--log-level", "warning",
    ]  # fmt: skip
    log = open(data_dir / "checkpoints.log", "ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_healthy(f"127.0.0.1:{port}", 60, process)
    return f"127.0.0.1:{port}", process


def _plain_get(plain: Minio, key: str) -> int:
    response = plain.get_object(PLAIN_BUCKET, key)
    try:
        return len(response.read())
    finally:
        response.close()
        response.release_conn()


def _cell(
    client: CheckpointClient, loop: asyncio.AbstractEventLoop, plain: Minio, size: int, repeats: int
) -> dict[str, float]:
    """Median MB/s of the four transfers of one size, each run saving under a fresh name."""
    data = os.urandom(size * MB)
    seconds: dict[str, list[float]] = {}
    for run in range(repeats + 1):  # run 0 warms connections and caches
        name = f"{size}mb-{run}"
        path = f"treadle://bench/weights/{name}"
        info = common_pb2.CheckpointInfo(path=path)
        timings = {  # in this order, so drift on the machine hits both sides alike
            "save": _seconds(loop.run_until_complete, client.put(TENANT, info, {FILE: data})),
            "plain_put": _seconds(
                plain.put_object, PLAIN_BUCKET, name, io.BytesIO(data), len(data)
            ),
            "load": _seconds(loop.run_until_complete, client.get(TENANT, path)),
            "plain_get": _seconds(_plain_get, plain, name),
        }
        for key, value in timings.items():
            if run:
                seconds.setdefault(key, []).append(value)
    return {key: size / statistics.median(values) for key, values in seconds.items()}


def measure(sizes_mb: list[int], repeats: dict[int, int]) -> list[dict[str, float]]:
    """Rows of {size_mb, save/load MB/s of treadle and plain, ratios}."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="treadle-bench-ckpt-") as scratch:
        s3 = start_s3_server(Path(scratch) / "s3")
        address, process = _checkpoints_process(s3, Path(scratch))
        plain = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False)
        plain.make_bucket(PLAIN_BUCKET)
        client = CheckpointClient(address)
        loop = asyncio.new_event_loop()
        try:
            for size in sizes_mb:
                mbps = _cell(client, loop, plain, size, repeats[size])
                rows.append(
                    {
                        "size_mb": size,
                        "save_mb_s": mbps["save"],
                        "plain_put_mb_s": mbps["plain_put"],
                        "save_ratio": mbps["save"] / mbps["plain_put"],
                        "load_mb_s": mbps["load"],
                        "plain_get_mb_s": mbps["plain_get"],
                        "load_ratio": mbps["load"] / mbps["plain_get"],
                    }
                )
        finally:
            loop.run_until_complete(client.close())
            loop.close()
            process.terminate()
            process.wait(timeout=30)
            s3.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,100", help="adapter sizes in MB")
    parser.add_argument("--repeats", type=int, default=5, help="runs per cell (100 MB: 3)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = measure(sizes, {s: (3 if s >= 100 else args.repeats) for s in sizes})
    header = (
        f"{'size':>6} | {'save MB/s':>9} {'plain put':>9} {'ratio':>6} | "
        f"{'load MB/s':>9} {'plain get':>9} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size_mb']:>4}MB | {r['save_mb_s']:>9.0f} {r['plain_put_mb_s']:>9.0f} "
            f"{r['save_ratio']:>5.2f}x | {r['load_mb_s']:>9.0f} {r['plain_get_mb_s']:>9.0f} "
            f"{r['load_ratio']:>5.2f}x"
        )
    target = all(r["save_ratio"] >= 0.8 and r["load_ratio"] >= 0.8 for r in rows)
    print(f"target >= 0.8x of the plain client everywhere: {'met' if target else 'MISSED'}")
    path = write_results(
        "checkpoints_throughput", {"rows": rows, "target_ratio": 0.8, "target_met": target}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
