"""The local SeaweedFS launcher that tests and `treadle up` share."""

from __future__ import annotations

import socket
from pathlib import Path

from minio import Minio

from treadle_runtime.seaweed import start_s3_server


def test_start_serves_s3_on_loopback_and_stop_leaves_nothing(tmp_path: Path) -> None:
    server = start_s3_server(tmp_path)
    try:
        client = Minio(
            server.endpoint,
            access_key=server.access_key,
            secret_key=server.secret_key,
            secure=False,
        )
        client.make_bucket("launcher-check")
        assert [b.name for b in client.list_buckets()] == ["launcher-check"]
        assert server.endpoint.startswith("127.0.0.1:")
        wrong = Minio(server.endpoint, access_key="nobody", secret_key="x" * 16, secure=False)
        try:
            wrong.list_buckets()
            raise AssertionError("unknown credentials were accepted")
        except Exception as exc:  # S3Error: InvalidAccessKeyId
            assert "InvalidAccessKeyId" in str(exc) or "AccessDenied" in str(exc)
    finally:
        server.stop()
    assert server.process.poll() is not None
    host, port = server.endpoint.split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0  # nothing listens any more
