"""Checkpoint save/load throughput through the Checkpoints service versus a plain S3 client.

For adapters of 1, 10 and 100 MB, against one SeaweedFS on loopback:
- treadle: CheckpointClient.put / .get (what trainer and sampler call) to a checkpoints process:
  chunked gRPC stream -> service (sha256 of every byte, multipart upload, manifest) -> S3, and
  back with the sha256 verified;
- plain: the `minio` client's put_object / get_object of the same bytes, in this process;
- bare hop: the same client's Get from a process that streams the bytes from memory (no S3, no
  sha256): what the gRPC hop between two processes alone costs, the floor of any load through
  the service.
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
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from local_mesh import write_results
from minio import Minio

from treadle.v1 import checkpoints_pb2, checkpoints_pb2_grpc, common_pb2
from treadle_checkpoints.service import add_to_server
from treadle_runtime.checkpoint_client import CheckpointClient, piece_bytes
from treadle_runtime.launcher import free_port, wait_healthy
from treadle_runtime.seaweed import S3Server, start_s3_server
from treadle_runtime.server import ServerConfig, serve
from treadle_runtime.wire_bytes import chunk_message

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


class _BareHop(checkpoints_pb2_grpc.CheckpointsServicer):
    """Checkpoints.Get streaming `int(request.path)` bytes from memory in the service's pieces,
    written as the service writes them."""

    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.data = b""

    async def Get(
        self, request: checkpoints_pb2.GetCheckpointRequest, context: object
    ) -> AsyncIterator[checkpoints_pb2.GetCheckpointResponse | bytes]:
        size = int(request.path)
        if len(self.data) != size:
            self.data = os.urandom(size)
        view = memoryview(self.data)
        yield checkpoints_pb2.GetCheckpointResponse(info=common_pb2.CheckpointInfo(path="bare"))
        step = piece_bytes(size, self.chunk_bytes)  # as the service sends a file
        for start in range(0, size, step):
            piece = view[start : start + step]
            yield chunk_message(FILE, piece, start + step >= size)


def _serve_bare_hop(port: int) -> None:
    async def setup(server: grpc.aio.Server) -> list[str]:
        add_to_server(_BareHop(1 << 20), server)
        return ["treadle.v1.Checkpoints"]

    asyncio.run(serve(ServerConfig(port=port, log_level="warning"), "bare-hop", setup))


def _bare_hop_process(data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [sys.executable, __file__, "--serve-bare-hop", str(port)]
    log = open(data_dir / "bare-hop.log", "ab")
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
    client: CheckpointClient,
    bare: CheckpointClient,
    loop: asyncio.AbstractEventLoop,
    plain: Minio,
    size: int,
    repeats: int,
) -> dict[str, float]:
    """Median MB/s of the five transfers of one size, each run saving under a fresh name."""
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
            "bare_hop": _seconds(loop.run_until_complete, bare.get(TENANT, str(size * MB))),
        }
        for key, value in timings.items():
            if run:
                seconds.setdefault(key, []).append(value)
    return {key: size / statistics.median(values) for key, values in seconds.items()}


def measure(sizes_mb: list[int], repeats: dict[int, int]) -> list[dict[str, float]]:
    """Rows of {size_mb, save/load MB/s of treadle and plain, bare-hop MB/s, ratios}."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="treadle-bench-ckpt-") as scratch:
        s3 = start_s3_server(Path(scratch) / "s3")
        address, process = _checkpoints_process(s3, Path(scratch))
        bare_address, bare_process = _bare_hop_process(Path(scratch))
        plain = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False)
        plain.make_bucket(PLAIN_BUCKET)
        client, bare = CheckpointClient(address), CheckpointClient(bare_address)
        loop = asyncio.new_event_loop()
        try:
            for size in sizes_mb:
                mbps = _cell(client, bare, loop, plain, size, repeats[size])
                rows.append(
                    {
                        "size_mb": size,
                        "save_mb_s": mbps["save"],
                        "plain_put_mb_s": mbps["plain_put"],
                        "save_ratio": mbps["save"] / mbps["plain_put"],
                        "load_mb_s": mbps["load"],
                        "plain_get_mb_s": mbps["plain_get"],
                        "load_ratio": mbps["load"] / mbps["plain_get"],
                        "bare_hop_mb_s": mbps["bare_hop"],
                        "bare_hop_ratio": mbps["bare_hop"] / mbps["plain_get"],
                    }
                )
        finally:
            loop.run_until_complete(client.close())
            loop.run_until_complete(bare.close())
            loop.close()
            for running in (process, bare_process):
                running.terminate()
                running.wait(timeout=30)
            s3.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,100", help="adapter sizes in MB")
    parser.add_argument("--repeats", type=int, default=5, help="runs per cell (100 MB: 3)")
    parser.add_argument("--serve-bare-hop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare_hop:
        _serve_bare_hop(args.serve_bare_hop)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = measure(sizes, {s: (3 if s >= 100 else args.repeats) for s in sizes})
    header = (
        f"{'size':>6} | {'save MB/s':>9} {'plain put':>9} {'ratio':>6} | "
        f"{'load MB/s':>9} {'plain get':>9} {'ratio':>6} | {'bare hop':>8} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size_mb']:>4}MB | {r['save_mb_s']:>9.0f} {r['plain_put_mb_s']:>9.0f} "
            f"{r['save_ratio']:>5.2f}x | {r['load_mb_s']:>9.0f} {r['plain_get_mb_s']:>9.0f} "
            f"{r['load_ratio']:>5.2f}x | {r['bare_hop_mb_s']:>8.0f} {r['bare_hop_ratio']:>5.2f}x"
        )
    target = all(r["save_ratio"] >= 0.8 and r["load_ratio"] >= 0.8 for r in rows)
    print(f"target >= 0.8x of the plain client everywhere: {'met' if target else 'MISSED'}")
    path = write_results(
        "checkpoints_throughput", {"rows": rows, "target_ratio": 0.8, "target_met": target}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
