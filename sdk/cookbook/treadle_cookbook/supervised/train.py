"""The supervised training loop: cross_entropy over rendered datums, pipelined, with a learning-rate
schedule, held-out evaluation on a cadence, periodic checkpoints, and resume from the last one.

Key decisions:
- Pipelined: step k's forward_backward and optim_step are submitted together, and before step
  k−1's results are awaited, so every clock cycle of the service does one step of this run.
- Resumable: a state checkpoint (weights + optimizer + step) every `save_every` steps is recorded in
  `log_dir/checkpoints.jsonl` once saved; a run started on a log_dir that has one continues from it
  on the same batches (their order is a function of seed and epoch), and the metrics logged after
  that checkpoint by the interrupted run are dropped so the curves have no duplicate steps.
- Every checkpoint carries the renderer's name in its metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import treadle
from treadle import types
from treadle.contract.losses import CROSS_ENTROPY
from treadle_cookbook.eval.evaluators import SamplingClientEvaluator, TrainingClientEvaluator
from treadle_cookbook.run_log import RunLog, plot_metrics, read_metrics
from treadle_cookbook.supervised.checkpoints import last_checkpoint, record_checkpoint
from treadle_cookbook.supervised.data import SupervisedDataset, datum_tokens, datum_weight
from treadle_cookbook.supervised.lr_schedule import lr_multiplier

WEEK = 7 * 24 * 3600


@dataclass
class Config:
    """Hyperparameters and cadence of one supervised run."""

    log_dir: str  # metrics.jsonl, checkpoints.jsonl, summary.json and the plot go here
    base_model: str  # the model the LoRA adapter trains on
    renderer_name: str  # recorded in every checkpoint's metadata
    learning_rate: float  # peak learning rate (see hyperparams.get_lr)
    lr_schedule: str = "linear"  # constant | linear | cosine
    warmup_steps: int = 0  # linear warmup from 0 before the schedule
    lora_rank: int = 32  # LoRA rank of a new adapter
    num_epochs: int = 1  # passes over the training data
    max_steps: int | None = None  # stop after this many steps (None: all epochs)
    eval_every: int = 10  # inline TrainingClientEvaluators every N steps (0: never)
    sampling_eval_every: int = 0  # SamplingClientEvaluators every N steps (0: only at the end)
    save_every: int = 20  # state checkpoint every N steps (0: only the final one)
    checkpoint_ttl_seconds: int | None = WEEK  # periodic checkpoints expire; final ones are kept
    seed: int = 0  # LoRA initialisation
    adam: dict[str, float] = field(default_factory=dict)  # extra AdamParams (beta1, grad_clip_norm)


@dataclass
class TrainResult:
    """Where a finished run left its weights and its final metrics."""

    state_path: str
    sampler_path: str
    steps: int
    metrics: dict[str, float]
    log_dir: str


@dataclass
class _Pending:
    step: int
    forward_backward: treadle.APIFuture[Any]
    optim: treadle.APIFuture[Any]
    metrics: dict[str, float]
    weight: float
    save: treadle.APIFuture[Any] | None = None


def train(
    service: treadle.ServiceClient,
    config: Config,
    dataset: SupervisedDataset,
    evaluators: Sequence[TrainingClientEvaluator] = (),
    sampling_evaluators: Sequence[SamplingClientEvaluator] = (),
) -> TrainResult:
    """Train (or continue training) a LoRA adapter on `dataset`; returns the final checkpoints."""
    log_dir = Path(config.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    schedule = list(dataset.schedule(config.num_epochs))
    total = len(schedule) if config.max_steps is None else min(len(schedule), config.max_steps)
    if total < 1:
        raise ValueError("max_steps: the run has no step to take")

    resume = last_checkpoint(log_dir)
    if resume is not None:
        client = service.create_training_client_from_state_with_optimizer(resume["state_path"])
        start = int(resume["step"])
    else:
        client = service.create_lora_training_client(
            config.base_model, rank=config.lora_rank, seed=config.seed
        )
        start = 0
    _drop_metrics_from(log_dir, start)
    (log_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    with RunLog(log_dir, total, description="sft") as log:
        log.bar.update(start)
        if resume is not None:
            log.note(f"resumed from {resume['state_path']} at step {start}")
        pending: _Pending | None = None
        loaded_epoch = -1
        for step in range(start, total):
            metrics = _evaluate(client, config, step, total, evaluators, sampling_evaluators)
            epoch, index = schedule[step]
            if epoch != loaded_epoch:
                dataset.set_epoch(epoch)
                loaded_epoch = epoch
            batch = dataset.get_batch(index)
            lr = config.learning_rate * lr_multiplier(
                config.lr_schedule, step, total, config.warmup_steps
            )
            adam = types.AdamParams(**{**config.adam, "learning_rate": lr})
            current = _Pending(
                step=step,
                forward_backward=client.forward_backward(batch, CROSS_ENTROPY),
                optim=client.optim_step(adam),
                metrics={
                    **metrics,
                    "lr": lr,
                    "epoch": float(epoch),
                    "num_sequences": float(len(batch)),
                    "num_tokens": float(sum(datum_tokens(d) for d in batch)),
                },
                weight=sum(datum_weight(d) for d in batch),
            )
            done = step + 1
            if config.save_every and done % config.save_every == 0 and done < total:
                current.save = client.save_state(
                    f"step_{done:06d}",
                    ttl_seconds=config.checkpoint_ttl_seconds,
                    renderer_name=config.renderer_name,
                )
            if pending is not None:
                _finish(pending, log, config)
            pending = current
        if pending is not None:
            _finish(pending, log, config)

        final = client.save_state("final", ttl_seconds=None, renderer_name=config.renderer_name)
        sampler = client.save_weights_for_sampler(
            "final", ttl_seconds=None, renderer_name=config.renderer_name
        )
        final_metrics = {k: v for evaluator in evaluators for k, v in evaluator(client).items()}
        state_path, sampler_path = final.result().path, sampler.result().path
        if sampling_evaluators:
            sampling_client = service.create_sampling_client(model_path=sampler_path)
            for sampling_evaluator in sampling_evaluators:
                final_metrics.update(sampling_evaluator(sampling_client))
        record_checkpoint(
            log_dir,
            {
                "name": "final",
                "step": total,
                "state_path": state_path,
                "sampler_path": sampler_path,
                "renderer": config.renderer_name,
            },
        )
        for key, value in final_metrics.items():
            log.note(f"final {key} = {value:.4f}")

    summary = {
        "steps": total,
        "final": final_metrics,
        "state_path": state_path,
        "sampler_path": sampler_path,
        "renderer": config.renderer_name,
    }
    (log_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logged = {key for entry in read_metrics(log.path) for key in entry if "/" in key}
    keys = ["train/nll", *sorted(logged - {"train/nll"}), "lr"]
    plot_metrics(log.path, log_dir / "metrics.png", keys, title=f"sft {config.base_model}")
    return TrainResult(state_path, sampler_path, total, final_metrics, str(log_dir))


def _evaluate(
    client: treadle.TrainingClient,
    config: Config,
    step: int,
    total: int,
    evaluators: Sequence[TrainingClientEvaluator],
    sampling_evaluators: Sequence[SamplingClientEvaluator],
) -> dict[str, float]:
    """Metrics of the inline evaluators due at `step` (weights after `step` updates)."""
    metrics: dict[str, float] = {}
    if evaluators and config.eval_every and step % config.eval_every == 0:
        for evaluator in evaluators:
            metrics.update(evaluator(client))
    every = config.sampling_eval_every
    if sampling_evaluators and every and step % every == 0 and step < total:
        sampling_client = client.save_weights_and_get_sampling_client()
        for sampling_evaluator in sampling_evaluators:
            metrics.update(sampling_evaluator(sampling_client))
    return metrics


def _finish(pending: _Pending, log: RunLog, config: Config) -> None:
    """Await a step's results, record its checkpoint, log its metrics."""
    result = pending.forward_backward.result()
    optim = pending.optim.result()
    metrics = dict(pending.metrics)
    metrics["train/nll"] = result.metrics["loss:sum"] / max(pending.weight, 1e-9)
    if "grad_norm:max" in optim.metrics:
        metrics["grad_norm"] = float(optim.metrics["grad_norm:max"])
    if pending.save is not None:
        record_checkpoint(
            log.dir,
            {
                "name": f"step_{pending.step + 1:06d}",
                "step": pending.step + 1,
                "state_path": pending.save.result().path,
                "renderer": config.renderer_name,
            },
        )
    log.log(pending.step, **{k: float(v) for k, v in metrics.items() if np.isfinite(v)})


def _drop_metrics_from(log_dir: Path, step: int) -> None:
    """Forget metrics of steps >= `step` (logged by a run that stopped after its checkpoint)."""
    path = log_dir / "metrics.jsonl"
    if not path.exists():
        return
    kept = [e for e in read_metrics(path) if e.get("step", 0) < step]
    path.write_text("".join(json.dumps(e) + "\n" for e in kept))
