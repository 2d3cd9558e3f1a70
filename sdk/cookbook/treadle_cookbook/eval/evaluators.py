"""Inline evaluators, run by training loops on their cadence (tinker-cookbook's two kinds):
a TrainingClientEvaluator scores the current weights directly (held-out NLL, one `forward`);
a SamplingClientEvaluator scores samples from a sampler checkpoint of them (a benchmark task).
Both return metrics named `prefix/metric`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

import treadle
from treadle import types
from treadle.contract.losses import CROSS_ENTROPY
from treadle_cookbook.eval.runner import BenchmarkConfig, run_benchmark
from treadle_cookbook.renderers import Renderer


class TrainingClientEvaluator(Protocol):
    """Metrics of the training client's current weights."""

    def __call__(self, training_client: treadle.TrainingClient) -> dict[str, float]: ...


class SamplingClientEvaluator(Protocol):
    """Metrics of samples drawn from a sampling client."""

    def __call__(self, sampling_client: treadle.SamplingClient) -> dict[str, float]: ...


class NLLEvaluator:
    """Mean negative log-likelihood per trained token of held-out datums:
    nll = Σ loss:sum / Σ weights (cross_entropy's loss is −Σ w·lp), as `{name}/nll`."""

    def __init__(self, datums: Sequence[types.Datum], name: str = "test", chunk: int = 32) -> None:
        if not datums:
            raise ValueError("datums: no held-out datums to evaluate")
        self.datums = list(datums)
        self.name = name
        self.chunk = chunk
        self.weight = float(
            sum(np.sum(d.loss_fn_inputs["weights"].to_numpy()) for d in self.datums)
        )

    def __call__(self, training_client: treadle.TrainingClient) -> dict[str, float]:
        futures = [
            training_client.forward(self.datums[i : i + self.chunk], CROSS_ENTROPY)
            for i in range(0, len(self.datums), self.chunk)
        ]
        loss = sum(future.result().metrics["loss:sum"] for future in futures)
        return {f"{self.name}/nll": loss / max(self.weight, 1e-9)}


class BenchmarkEvaluator:
    """A benchmark task as an inline evaluator: `{task}/accuracy` of the sampled weights.
    Results are stored (and reused) in `results_dir` like any benchmark run."""

    def __init__(
        self,
        task: str,
        renderer: Renderer,
        results_dir: str | Path,
        config: BenchmarkConfig | None = None,
        limit: int | None = None,
    ) -> None:
        self.task = task
        self.renderer = renderer
        self.results_dir = results_dir
        self.config = config
        self.limit = limit

    def __call__(self, sampling_client: treadle.SamplingClient) -> dict[str, float]:
        result = run_benchmark(
            sampling_client, self.renderer, self.task, self.results_dir, self.config, self.limit
        )
        return {f"{result.task}/accuracy": result.accuracy}
