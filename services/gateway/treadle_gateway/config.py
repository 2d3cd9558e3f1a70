"""The gateway's configuration: where it listens, which scheduler it fronts, how it holds polls."""

from __future__ import annotations

from dataclasses import dataclass, field

from treadle.contract.transport import check_keepalive


@dataclass
class GatewayConfig:
    """Treadle gateway: the official tinker SDK's HTTP protocol, in front of the scheduler."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8480, metadata={"help": "HTTP port (0 picks a free one)"})
    metrics_port: int = field(default=0, metadata={"help": "Prometheus port (0 = off)"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    scheduler: str = field(
        default="127.0.0.1:8470", metadata={"help": "the scheduler's gRPC address"}
    )
    long_poll_seconds: float = field(
        default=25.0,
        metadata={"help": "longest a retrieve_future waits for its result (the SDK allows 45)"},
    )
    result_keep_seconds: float = field(
        default=600.0, metadata={"help": "how long a finished result stays retrievable"}
    )
    max_body_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "largest request body accepted (after zstd)"}
    )
    download_seconds: float = field(
        default=900.0, metadata={"help": "how long a signed checkpoint download link is valid"}
    )
    public_url: str = field(
        default="",
        metadata={"help": "base URL of signed download links (default: the request's own)"},
    )
    compress_forward_backward: bool = field(
        default=False, metadata={"help": "ask SDKs to send forward_backward zstd-compressed"}
    )
    session_polling: bool = field(
        default=True,
        metadata={"help": "let SDKs that can (0.29+) poll sampling results per session"},
    )
    local_tokenizers: bool = field(
        default=True,
        metadata={
            "help": "get_info names the served tokenizer's local folder when the trainer "
            "reports one, so get_tokenizer() works offline on the mesh's machine"
        },
    )
    peer_keepalive_seconds: float = field(
        default=20.0, metadata={"help": "ping the scheduler this often (>= 5)"}
    )

    def validate(self) -> None:
        """Refuse values the gateway cannot run with."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not in 0..65535")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: {self.metrics_port} is not in 0..65535")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"log_level: {self.log_level!r} is not debug/info/warning/error")
        if not self.scheduler.strip():
            raise ValueError("scheduler: the scheduler's address is required")
        if not 0 < self.long_poll_seconds <= 40:
            raise ValueError(
                f"long_poll_seconds: must be in (0, 40] (the SDK gives up after 45), "
                f"got {self.long_poll_seconds}"
            )
        for name in ("result_keep_seconds", "download_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes: must be >= 1024, got {self.max_body_bytes}")
        check_keepalive("peer_keepalive_seconds", self.peer_keepalive_seconds)
