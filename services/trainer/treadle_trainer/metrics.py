"""Prometheus metrics of the trainer (prefix treadle_trainer_), served by the runtime's endpoint.

MFU = rate(treadle_trainer_flops_total) / treadle_trainer_peak_flops while busy; the gauge
treadle_trainer_mfu holds it for the last cycle (model FLOPs / (busy seconds · peak)).
"""

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
    "Datums in one batched forward/backward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
ADAPTERS = Gauge("treadle_trainer_adapters_resident", "Adapters resident on the device")
ADAPTERS_HELD = Gauge(
    "treadle_trainer_adapters_held", "Adapters held by this trainer (resident or offloaded)"
)
ADAPTER_MOVES = Counter(
    "treadle_trainer_adapter_moves",
    "Adapters moved off the device (offload) or back (load) by the residency budget",
    ["direction"],
)
STEP_SECONDS = Histogram(
    "treadle_trainer_step_seconds",
    "Seconds spent per phase: forward_backward (one wave's passes), optim_step, cycle",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BUSY_SECONDS = Counter("treadle_trainer_busy_seconds", "Seconds spent executing cycle plans")
FLOPS = Counter(
    "treadle_trainer_flops", "Model FLOPs of forward/backward passes (see treadle_trainer.flops)"
)
PEAK_FLOPS = Gauge(
    "treadle_trainer_peak_flops", "Measured dense matmul peak of the device (FLOP/s, model dtype)"
)
MFU = Gauge("treadle_trainer_mfu", "Model FLOPs utilisation of the last cycle (0..1)")
OPS = Counter("treadle_trainer_ops", "Ops executed, by kind and outcome code", ["kind", "code"])
CYCLES = Counter("treadle_trainer_cycles", "Cycle plans executed")
