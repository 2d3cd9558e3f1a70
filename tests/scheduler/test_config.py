"""The scheduler's own configuration checks, as `--flags` name them."""

from __future__ import annotations

import pytest

from treadle_runtime.config import ConfigError, load_config
from treadle_scheduler.config import SchedulerConfig


def test_scheduler_refuses_a_peer_keepalive_its_peers_would_refuse() -> None:
    argv = ["--trainers", "127.0.0.1:1", "--peer-keepalive-seconds", "2"]
    with pytest.raises(ConfigError, match=r"peer_keepalive_seconds: must be >= 5"):
        load_config(SchedulerConfig, argv, {}, service="scheduler")
    ok = load_config(SchedulerConfig, argv[:2], {}, service="scheduler")
    assert ok.peer_keepalive_seconds == 20.0
