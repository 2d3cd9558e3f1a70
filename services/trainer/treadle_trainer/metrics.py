"""Prometheus metrics of the trainer (prefix treadle_trainer_), served by the runtime's endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TOKENS = Counter("treadle_trainer_tokens", "Tokens processed by forward and forward_backward ops")
WAVE_SIZE = Histogram(
    "treadle_trainer_wave_size",
    "Ops per wave (one op per model)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PASS_ROWS = Histogram(
    "treadle_trainer_pass_rows",
    "Datums in one wave's batched forward/backward",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
ADAPTERS = Gauge("treadle_trainer_adapters_resident", "Adapters held by this trainer")
STEP_SECONDS = Histogram(
    "treadle_trainer_step_seconds",
    "Seconds spent per phase: forward_backward (one batched wave), optim_step, cycle",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
OPS = Counter("treadle_trainer_ops", "Ops executed, by kind and outcome code", ["kind", "code"])
CYCLES = Counter("treadle_trainer_cycles", "Cycle plans executed")
