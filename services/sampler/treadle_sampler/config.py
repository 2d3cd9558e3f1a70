"""The sampler's configuration: which base model, which engine, and how much to cache and batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from treadle_runtime.server import ServerConfig

ENGINES = ("torch",)
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class SamplerConfig(ServerConfig):
    """Treadle sampler: multi-LoRA sampling for one base model."""

    base_model: str = field(
        default="treadle/tiny-llama", metadata={"help": "base model served by this process"}
    )
    checkpoints: str = field(
        default="", metadata={"help": "checkpoints service host:port (empty: base model only)"}
    )
    engine: str = field(default="torch", metadata={"help": "sampling engine: torch"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if present), cpu or cuda"})
    dtype: str = field(
        default="auto", metadata={"help": "auto (float32 on cpu, bfloat16 on cuda) or a dtype"}
    )
    max_adapters: int = field(default=16, metadata={"help": "adapters kept loaded (LRU)"})
    max_num_samples: int = field(default=64, metadata={"help": "largest num_samples accepted"})
    max_batch_size: int = field(
        default=64, metadata={"help": "sequences decoded together in one step"}
    )

    def validate(self) -> None:
        """Refuse values the sampler cannot run with."""
        super().validate()
        if self.engine not in ENGINES:
            raise ValueError(f"engine: {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.device not in DEVICES:
            raise ValueError(f"device: {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        for name in ("max_adapters", "max_num_samples", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
