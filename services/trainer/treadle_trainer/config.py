"""Trainer configuration: the base model served, the device, residency, and where checkpoints go.

Every field is a `--flag` and a `TREADLE_TRAINER_*` variable (treadle_runtime.config).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from treadle_models.devices import DEVICES
from treadle_models.served import served_model
from treadle_runtime.server import ServerConfig

DTYPES = ("auto", "float32", "bfloat16")  # base weights are trained in these
OFFLOADS = ("auto", "host", "disk")


@dataclass
class TrainerConfig(ServerConfig):
    """Treadle trainer: one frozen base model, many tenants' LoRA adapters, trained in waves."""

    base_model: str = field(
        default="treadle/tiny-llama",
        metadata={"help": "base model served: SOURCE or NAME=SOURCE (a built-in or an HF folder)"},
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda if present), cpu or cuda"})
    dtype: str = field(
        default="auto", metadata={"help": "base weights: auto (bf16 on cuda, fp32 on cpu)"}
    )
    max_seq_len: int = field(
        default=0, metadata={"help": "longest datum in tokens (0 = the model's limit)"}
    )
    max_pass_tokens: int = field(
        default=8192, metadata={"help": "padded tokens per batched pass; larger waves split"}
    )
    max_resident_adapters: int = field(
        default=0,
        metadata={
            "help": "adapters on the device at once; idle ones beyond are offloaded (0 = no limit)"
        },
    )
    offload: str = field(
        default="auto",
        metadata={
            "help": "where offloaded adapters wait: auto (host on cuda, disk on cpu), host or disk"
        },
    )
    offload_dir: str = field(
        default="",
        metadata={"help": "folder for disk offload (empty = a private temporary folder)"},
    )
    head_chunk_rows: int = field(
        default=0,
        metadata={"help": "tokens per unembedding chunk (0 = 24 MiB of logits on cpu, 8192 cuda)"},
    )
    peak_flops: float = field(
        default=0.0,
        metadata={"help": "device matmul peak in FLOP/s for MFU (0 = measure at startup)"},
    )
    torch_threads: int = field(
        default=0, metadata={"help": "CPU threads for torch (0 = torch's default, all cores)"}
    )
    checkpoints: str = field(
        default="", metadata={"help": "Checkpoints service host:port (empty = saves fail)"}
    )
    state_ttl_seconds: int = field(
        default=0, metadata={"help": "TTL of a state checkpoint saved without one (0 = keep)"}
    )
    sampler_ttl_seconds: int = field(
        default=0, metadata={"help": "TTL of a sampler checkpoint saved without one (0 = keep)"}
    )

    def validate(self) -> None:
        """Refuse values the trainer cannot run with."""
        super().validate()
        served_model(self.base_model)
        if self.device not in DEVICES:
            raise ValueError(f"device: {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.max_seq_len < 0:
            raise ValueError(f"max_seq_len: must be >= 0, got {self.max_seq_len}")
        if self.max_pass_tokens <= 0:
            raise ValueError(f"max_pass_tokens: must be > 0, got {self.max_pass_tokens}")
        if self.offload not in OFFLOADS:
            raise ValueError(f"offload: {self.offload!r} is not one of {', '.join(OFFLOADS)}")
        for name in ("max_resident_adapters", "head_chunk_rows", "peak_flops", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("state_ttl_seconds", "sampler_ttl_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
