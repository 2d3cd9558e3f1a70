"""The checkpoints service's configuration: which S3 server and bucket, and how it streams and
expires checkpoints. Defaults match the local SeaweedFS that `treadle up` starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from treadle_runtime.server import ServerConfig

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest multipart part


@dataclass
class CheckpointsConfig(ServerConfig):
    """Treadle checkpoints: durable checkpoint storage over S3 with TTLs."""

    s3_endpoint: str = field(default="127.0.0.1:8333", metadata={"help": "S3 host:port"})
    s3_access_key: str = field(default="", metadata={"help": "S3 access key"})
    s3_secret_key: str = field(default="", metadata={"help": "S3 secret key"})
    s3_secure: bool = field(default=False, metadata={"help": "use HTTPS to reach S3"})
    s3_region: str = field(default="us-east-1", metadata={"help": "S3 region of the bucket"})
    s3_timeout_seconds: float = field(
        default=10.0, metadata={"help": "connect timeout of one S3 request"}
    )
    s3_retries: int = field(
        default=2, metadata={"help": "retries of an S3 request that fails to connect or gets 5xx"}
    )
    bucket: str = field(
        default="treadle-checkpoints", metadata={"help": "bucket (created if missing)"}
    )
    chunk_bytes: int = field(
        default=1 << 20,
        metadata={"help": "largest chunk message of Get and Export (small files: a quarter)"},
    )
    part_bytes: int = field(
        default=16 << 20, metadata={"help": "multipart part size for large files (>= 5 MiB)"}
    )
    parallel_parts: int = field(
        default=3, metadata={"help": "multipart parts of one file uploaded at a time"}
    )
    sweep_interval_seconds: float = field(
        default=60.0, metadata={"help": "seconds between expiry sweeps (0 = no sweep)"}
    )
    orphan_grace_seconds: float = field(
        default=3600.0,
        metadata={"help": "age after which objects of an unfinished save are deleted"},
    )
    lifecycle_rules: bool = field(
        default=True, metadata={"help": "install day-granular S3 lifecycle rules at startup"}
    )

    def validate(self) -> None:
        """Refuse values the service cannot run with."""
        super().validate()
        if not self.s3_endpoint or "/" in self.s3_endpoint:
            raise ValueError(f"s3_endpoint: {self.s3_endpoint!r} is not host:port")
        if not 1024 <= self.chunk_bytes <= self.max_message_bytes // 2:
            raise ValueError("chunk_bytes: must be >= 1024 and at most half of max_message_bytes")
        if self.part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes: must be >= {MIN_PART_BYTES} (S3's minimum part)")
        if self.parallel_parts < 1:
            raise ValueError(f"parallel_parts: must be >= 1, got {self.parallel_parts}")
        if self.sweep_interval_seconds < 0:
            raise ValueError("sweep_interval_seconds: must be >= 0")
        if self.orphan_grace_seconds < 0:
            raise ValueError("orphan_grace_seconds: must be >= 0")
        if self.s3_retries < 0:
            raise ValueError("s3_retries: must be >= 0")
