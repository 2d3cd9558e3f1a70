"""SamplerConfig from flags and environment, and the values it refuses."""

from __future__ import annotations

import pytest

from treadle_runtime.config import ConfigError, load_config
from treadle_sampler.config import SamplerConfig


def test_flags_override_environment_override_defaults() -> None:
    env = {"TREADLE_SAMPLER_MAX_ADAPTERS": "3", "TREADLE_SAMPLER_BASE_MODEL": "treadle/tiny-qwen2"}
    config = load_config(SamplerConfig, ["--max-adapters", "5"], env, service="sampler")
    assert (config.max_adapters, config.base_model) == (5, "treadle/tiny-qwen2")
    assert (config.engine, config.checkpoints, config.max_num_samples) == ("vllm", "", 64)


def test_the_sglang_engine_is_configured_like_every_other_field() -> None:
    env = {"TREADLE_SAMPLER_ENGINE": "sglang", "TREADLE_SAMPLER_SGLANG_URL": "http://gpu:30000"}
    argv = ["--sglang-max-loras-per-batch", "4", "--adapter-dir", "/shared/adapters"]
    config = load_config(SamplerConfig, argv, env, service="sampler")
    assert (config.engine, config.sglang_url) == ("sglang", "http://gpu:30000")
    assert (config.sglang_max_loras_per_batch, config.adapter_dir) == (4, "/shared/adapters")


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--engine", "tensorrt"], "engine"),
        (["--vllm-max-lora-rank", "24"], "vllm_max_lora_rank"),
        (["--vllm-max-loras", "0"], "vllm_max_loras"),
        (["--vllm-kv-cache-gib", "0"], "vllm_kv_cache_gib"),
        (["--device", "tpu"], "device"),
        (["--dtype", "int8"], "dtype"),
        (["--max-adapters", "0"], "max_adapters"),
        (["--max-num-samples", "0"], "max_num_samples"),
        (["--max-batch-size", "-1"], "max_batch_size"),
        (["--torch-threads", "-1"], "torch_threads"),
        (["--sglang-url", "localhost:30000"], "sglang_url"),
        (["--sglang-port", "70000"], "sglang_port"),
        (["--sglang-max-lora-rank", "0"], "sglang_max_lora_rank"),
        (["--sglang-timeout-seconds", "0"], "sglang_timeout_seconds"),
    ],
)
def test_unusable_values_are_refused_naming_the_field(argv: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        load_config(SamplerConfig, argv, {}, service="sampler")
