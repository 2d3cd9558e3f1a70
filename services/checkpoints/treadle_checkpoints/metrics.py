"""Prometheus metrics of the checkpoints service (prefix treadle_checkpoints_)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

BYTES_WRITTEN = Counter("treadle_checkpoints_bytes_written", "Checkpoint file bytes stored")
BYTES_READ = Counter("treadle_checkpoints_bytes_read", "Checkpoint file bytes served")
SAVE_SECONDS = Histogram(
    "treadle_checkpoints_save_seconds", "Duration of a successful Put", buckets=_SECONDS
)
LOAD_SECONDS = Histogram(
    "treadle_checkpoints_load_seconds", "Duration of a successful Get", buckets=_SECONDS
)
REQUESTS = Counter(
    "treadle_checkpoints_requests",
    "Requests answered, by method and status code",
    ["method", "code"],
)
EXPIRED = Counter("treadle_checkpoints_expired", "Checkpoints deleted by the expiry sweep")
ORPHANS_DELETED = Counter(
    "treadle_checkpoints_orphan_objects_deleted", "Objects of unfinished or replaced saves removed"
)
STORE_ERRORS = Counter(
    "treadle_checkpoints_store_errors",
    "Failed object-store calls, by operation and kind (unreachable or S3 error code)",
    ["operation", "kind"],
)
