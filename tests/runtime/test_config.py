"""Service configuration: flags and TREADLE_* variables alike, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from treadle_runtime.config import ConfigError, load_config
from treadle_runtime.server import ServerConfig


@dataclass
class ExampleConfig(ServerConfig):
    """An example service."""

    base_model: str = field(default="treadle/tiny-llama", metadata={"help": "model"})
    max_adapters: int = field(default=8, metadata={"help": "adapters kept"})
    verbose: bool = field(default=False, metadata={"help": "talk more"})


def test_defaults_then_environment_then_flags() -> None:
    assert load_config(ExampleConfig, [], {}, service="example").max_adapters == 8
    env = {"TREADLE_EXAMPLE_MAX_ADAPTERS": "3", "TREADLE_EXAMPLE_VERBOSE": "yes"}
    from_env = load_config(ExampleConfig, [], env, service="example")
    assert (from_env.max_adapters, from_env.verbose) == (3, True)
    both = load_config(
        ExampleConfig, ["--max-adapters", "5", "--port", "9000"], env, service="example"
    )
    assert (both.max_adapters, both.port, both.verbose) == (5, 9000, True)


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--max-adapters", "many"], {}, "--max-adapters"),
        (["--no-such-flag", "1"], {}, "--no-such-flag"),
        ([], {"TREADLE_EXAMPLE_PORT": "eighty"}, "TREADLE_EXAMPLE_PORT"),
        (["--port", "70000"], {}, "port"),
        (["--log-level", "loud"], {}, "log_level"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(ExampleConfig, argv, env, service="example")


@pytest.mark.mesh  # starts each service's process (torch's import alone takes seconds)
@pytest.mark.parametrize(
    "module", ["treadle_scheduler", "treadle_trainer", "treadle_sampler", "treadle_checkpoints"]
)
def test_service_with_bad_flag_exits_with_one_line(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--port", "not-a-port"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--port" in lines[0] and "Traceback" not in done.stderr
