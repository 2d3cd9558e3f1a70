"""TrainerConfig from flags and environment (residency, MFU and thread settings included), and
the values it refuses with the field's name."""

from __future__ import annotations

import pytest

from treadle_runtime.config import ConfigError, load_config
from treadle_trainer.config import TrainerConfig


def test_flags_override_environment_override_defaults() -> None:
    env = {"TREADLE_TRAINER_MAX_RESIDENT_ADAPTERS": "4", "TREADLE_TRAINER_OFFLOAD": "host"}
    argv = ["--max-resident-adapters", "2", "--peak-flops", "1.5e11", "--torch-threads", "1"]
    config = load_config(TrainerConfig, argv, env, service="trainer")
    assert (config.max_resident_adapters, config.offload) == (2, "host")
    assert (config.peak_flops, config.torch_threads) == (1.5e11, 1)
    defaults = TrainerConfig()
    assert (defaults.max_resident_adapters, defaults.offload, defaults.peak_flops) == (0, "auto", 0)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--device", "tpu"], "device"),
        (["--dtype", "int8"], "dtype"),
        (["--offload", "s3"], "offload"),
        (["--max-resident-adapters", "-1"], "max_resident_adapters"),
        (["--head-chunk-rows", "-8"], "head_chunk_rows"),
        (["--peak-flops", "-1"], "peak_flops"),
        (["--torch-threads", "-2"], "torch_threads"),
        (["--max-pass-tokens", "0"], "max_pass_tokens"),
    ],
)
def test_bad_values_are_refused_naming_the_field(argv: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        load_config(TrainerConfig, argv, {}, service="trainer")
