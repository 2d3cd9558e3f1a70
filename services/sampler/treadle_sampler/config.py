"""The sampler's configuration: which base model, which engine, and how much to cache and batch.

The `vllm_*` fields matter only with `engine=vllm` (vLLM's AsyncLLM in this process, CPU or GPU).

The `sglang_*` fields matter only with `engine=sglang`: attach to the server at `sglang_url`, or,
when it is empty, launch `python -m sglang.launch_server` on `sglang_port` (GPU machines).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from treadle_models import devices
from treadle_models.served import served_model
from treadle_runtime.server import ServerConfig

ENGINES = ("vllm", "torch", "sglang")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM takes
DTYPES = ("auto", *devices.DTYPES)


@dataclass
class SamplerConfig(ServerConfig):
    """Treadle sampler: multi-LoRA sampling for one base model."""

    base_model: str = field(
        default="treadle/tiny-llama",
        metadata={"help": "base model served: SOURCE or NAME=SOURCE (a built-in or an HF folder)"},
    )
    checkpoints: str = field(
        default="", metadata={"help": "checkpoints service host:port (empty: base model only)"}
    )
    engine: str = field(
        default="vllm",
        metadata={"help": "sampling engine: vllm (CPU or GPU), sglang (GPU) or torch"},
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda if present), cpu or cuda"})
    dtype: str = field(
        default="auto", metadata={"help": "auto (float32 on cpu, bfloat16 on cuda) or a dtype"}
    )
    max_adapters: int = field(default=16, metadata={"help": "adapters kept loaded (LRU)"})
    max_num_samples: int = field(default=64, metadata={"help": "largest num_samples accepted"})
    max_batch_size: int = field(
        default=64,
        metadata={"help": "sequences decoded together (sglang: requests in flight to SGLang)"},
    )
    adapter_dir: str = field(
        default="",
        metadata={"help": "folder for loaded adapters' PEFT files (empty: a temporary folder)"},
    )
    torch_threads: int = field(
        default=0, metadata={"help": "CPU threads for torch (0 = torch's default, all cores)"}
    )
    vllm_max_loras: int = field(
        default=8, metadata={"help": "vLLM: adapters in one batch (its max_loras)"}
    )
    vllm_lora_rank: int = field(
        default=16,
        metadata={
            "help": "vLLM: the LoRA rank its buffers start at; an adapter of a higher rank grows "
            "them (the engine restarts once, in-flight requests finish first)"
        },
    )
    vllm_max_lora_rank: int = field(
        default=128, metadata={"help": "vLLM: the largest adapter rank it serves"}
    )
    vllm_kv_cache_gib: float = field(
        default=1.0, metadata={"help": "vLLM: KV cache size in GiB (CPU memory or GPU memory)"}
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata={
            "help": "vLLM on a GPU: the part of the card that must be free when it starts "
            "(its gpu_memory_utilization; the KV cache is sized by vllm_kv_cache_gib)"
        },
    )
    sglang_url: str = field(
        default="", metadata={"help": "SGLang server to attach to (empty: launch one)"}
    )
    sglang_port: int = field(default=0, metadata={"help": "port of a launched SGLang server"})
    sglang_max_loras_per_batch: int = field(
        default=8, metadata={"help": "SGLang --max-loras-per-batch of a launched server"}
    )
    sglang_max_lora_rank: int = field(
        default=64, metadata={"help": "SGLang --max-lora-rank of a launched server"}
    )
    sglang_args: str = field(
        default="", metadata={"help": "extra flags for a launched SGLang server"}
    )
    sglang_timeout_seconds: float = field(
        default=600.0, metadata={"help": "SGLang start-up and per-request time limit"}
    )

    def validate(self) -> None:
        """Refuse values the sampler cannot run with."""
        super().validate()
        served_model(self.base_model)
        if self.engine not in ENGINES:
            raise ValueError(f"engine: {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.device not in devices.DEVICES:
            raise ValueError(f"device: {self.device!r} is not one of {', '.join(devices.DEVICES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.sglang_url and not self.sglang_url.startswith(("http://", "https://")):
            raise ValueError(f"sglang_url: {self.sglang_url!r} is not an http(s) URL")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads: must be >= 0, got {self.torch_threads}")
        ranks = ", ".join(map(str, VLLM_LORA_RANKS))
        for name in ("vllm_lora_rank", "vllm_max_lora_rank"):
            if getattr(self, name) not in VLLM_LORA_RANKS:
                raise ValueError(f"{name}: {getattr(self, name)} is not one of {ranks}")
        if self.vllm_lora_rank > self.vllm_max_lora_rank:
            message = f"{self.vllm_lora_rank} is above vllm_max_lora_rank {self.vllm_max_lora_rank}"
            raise ValueError(f"vllm_lora_rank: {message}")
        if self.vllm_kv_cache_gib <= 0:
            raise ValueError(f"vllm_kv_cache_gib: must be > 0, got {self.vllm_kv_cache_gib}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            message = f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}"
            raise ValueError(f"vllm_gpu_memory_utilization: {message}")
        if not 0 <= self.sglang_port <= 65535:
            raise ValueError(f"sglang_port: {self.sglang_port} is not in 0..65535")
        if self.sglang_timeout_seconds <= 0:
            raise ValueError(
                f"sglang_timeout_seconds: must be > 0, got {self.sglang_timeout_seconds}"
            )
        for name in (
            "max_adapters",
            "max_num_samples",
            "max_batch_size",
            "vllm_max_loras",
            "sglang_max_loras_per_batch",
            "sglang_max_lora_rank",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
