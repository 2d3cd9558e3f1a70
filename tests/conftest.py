"""Fixtures shared by every test: real servers on loopback, a real S3 server, tiny models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from fixtures.grpc_server import free_port, running_server
from fixtures.mesh import mesh
from fixtures.s3 import s3_server
from fixtures.scheduler import make_scheduler

__all__ = ["free_port", "make_scheduler", "mesh", "running_server", "s3_server"]
