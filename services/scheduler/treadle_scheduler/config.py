"""The scheduler's configuration: where its peers are, who may call it, and how cycles run."""

from __future__ import annotations

from dataclasses import dataclass, field

from treadle.contract.transport import check_keepalive
from treadle_runtime.server import ServerConfig


@dataclass
class SchedulerConfig(ServerConfig):
    """Treadle scheduler: the public endpoint (auth, sessions, ordering, clock cycles)."""

    trainers: str = field(default="", metadata={"help": "trainer addresses, comma-separated"})
    samplers: str = field(
        default="",
        metadata={"help": "sampler addresses, comma-separated; a DNS name means every replica"},
    )
    sampler_refresh_seconds: float = field(
        default=30.0, metadata={"help": "how often sampler names are resolved again"}
    )
    checkpoints: str = field(default="", metadata={"help": "checkpoints service address"})
    api_keys: str = field(default="", metadata={"help": "API keys as KEY=tenant,KEY2=tenant2"})
    api_keys_file: str = field(default="", metadata={"help": "file of API keys (JSON or lines)"})
    session_idle_seconds: float = field(
        default=120.0, metadata={"help": "release a session silent for this long"}
    )
    hold_timeout_seconds: float = field(
        default=60.0, metadata={"help": "fail a request whose predecessor seq_id never arrives"}
    )
    min_cycle_seconds: float = field(
        default=0.0, metadata={"help": "minimum cycle period (0 = work-conserving)"}
    )
    cycle_token_budget: int = field(
        default=65536, metadata={"help": "tokens of forward/backward work per cycle"}
    )
    max_batch_datums: int = field(default=1024, metadata={"help": "datums per request"})
    max_request_tokens: int = field(default=262144, metadata={"help": "tokens per request"})
    quota_max_models: int = field(
        default=0, metadata={"help": "training models per tenant (0 = unlimited)"}
    )
    quota_max_queued_tokens: int = field(
        default=0, metadata={"help": "tokens a tenant may have queued (0 = unlimited)"}
    )
    quotas_file: str = field(default="", metadata={"help": "per-tenant quota overrides (JSON)"})
    trainer_retry_seconds: float = field(
        default=2.0, metadata={"help": "interval between reconnects to a lost trainer"}
    )
    peer_keepalive_seconds: float = field(
        default=20.0,
        metadata={
            "help": "ping trainers and samplers this often; one silent for half as long again "
            "is lost (>= 5)"
        },
    )

    def validate(self) -> None:
        """Refuse configurations the scheduler cannot run with."""
        super().validate()
        if not self.trainers.strip():
            raise ValueError("trainers: at least one trainer address is required")
        if self.session_idle_seconds <= 0:
            raise ValueError("session_idle_seconds: must be > 0")
        if self.cycle_token_budget <= 0:
            raise ValueError("cycle_token_budget: must be > 0")
        if self.sampler_refresh_seconds <= 0:
            raise ValueError("sampler_refresh_seconds: must be > 0")
        check_keepalive("peer_keepalive_seconds", self.peer_keepalive_seconds)

    def addresses(self, name: str) -> list[str]:
        """The comma-separated addresses of config field `name` as a list."""
        return [a.strip() for a in str(getattr(self, name)).split(",") if a.strip()]
