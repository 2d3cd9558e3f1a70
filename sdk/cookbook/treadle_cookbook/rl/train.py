"""The RL training loop over the SDK: rollouts through a SamplingClient, group mean-centred
advantages, an RL loss (importance_sampling, ppo or cispo), an optional KL penalty against a
reference model, and a fresh sampling client after every optimizer step.

Three modes (tinker-cookbook's):
- synchronous (default): sample the whole batch with the current weights, then train on it;
- stream-minibatch (`stream_minibatch_config`): all of a step's rollouts start at once, and each
  minibatch's forward_backward is sent as soon as its groups land, while the rest still sample;
  one optim_step ends the step;
- async (`async_config`, see async_train.py): sampling runs ahead of training on the latest
  weights it has; groups more than `max_steps_off_policy` steps old are requeued, and every step
  trains on exactly `groups_per_batch` fresh groups.

Every step logs its metrics to `log_dir/metrics.jsonl` (RunLog) and the run ends with a PNG plot.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from treadle import SamplingClient, TrainingClient, types
from treadle.contract.losses import IMPORTANCE_SAMPLING
from treadle_cookbook.completers import TreadleTokenCompleter
from treadle_cookbook.rl.metrics import compute_kl_sample_train, compute_trajectory_metrics
from treadle_cookbook.rl.rollouts import do_group_rollout
from treadle_cookbook.rl.train_step import (
    RL_LOSSES,
    informative_data,
    penalize_and_forward_backward,
    train_on_groups,
)
from treadle_cookbook.rl.types import RLDataset, TrajectoryGroup
from treadle_cookbook.run_log import RunLog, plot_metrics

PLOT_KEYS = (
    "reward/mean",
    "env/correct",
    "test/correct",
    "frac_reward_zero_std",
    "optim/kl_sample_train_v1",
)


@dataclass
class AsyncConfig:
    """Sampling runs ahead of training by at most `max_steps_off_policy` optimizer steps."""

    max_steps_off_policy: int
    groups_per_batch: int


@dataclass
class StreamMinibatchConfig:
    """A step's groups are trained on in `num_minibatches` forward_backwards as they land."""

    groups_per_batch: int
    num_minibatches: int


@dataclass
class Config:
    """An RL run."""

    log_dir: str  # metrics.jsonl and metrics.png go here
    learning_rate: float = 4e-5  # Adam learning rate
    max_tokens: int = 32  # tokens per sampled action
    temperature: float = 1.0  # sampling temperature (1.0 keeps sampler and learner consistent)
    loss_fn: str = IMPORTANCE_SAMPLING  # one of RL_LOSSES
    loss_fn_config: dict[str, float] | None = None  # clip_low_threshold, clip_high_threshold
    num_substeps: int = 1  # optimizer steps per batch (more than one wants ppo)
    kl_penalty_coef: float = 0.0  # coef of the KL penalty against the reference (0 = off)
    kl_reference_model: str | None = None  # reference base model (default: the policy's)
    async_config: AsyncConfig | None = None  # async off-policy mode
    stream_minibatch_config: StreamMinibatchConfig | None = None  # stream-minibatch mode
    eval_every: int = 0  # run the evaluators every N steps (0: only before and after)
    save_every: int = 0  # save a state checkpoint every N steps (0: never)
    max_steps: int | None = None  # stop after N steps (default: the whole dataset)
    final_checkpoint: str = "final"  # name of the state + sampler checkpoints saved at the end
    renderer_name: str | None = None  # for checkpoint metadata (None: the training client's)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    plot_keys: Sequence[str] = field(default_factory=lambda: PLOT_KEYS)  # curves in the PNG

    def validate(self) -> None:
        """Refuse settings that cannot run, naming the field."""
        if self.loss_fn not in RL_LOSSES:
            raise ValueError(f"loss_fn: {self.loss_fn!r} is not one of {', '.join(RL_LOSSES)}")
        if self.async_config is not None and self.stream_minibatch_config is not None:
            raise ValueError("async_config, stream_minibatch_config: choose one mode")
        if self.async_config is not None and self.async_config.max_steps_off_policy < 0:
            raise ValueError("async_config.max_steps_off_policy: must be >= 0")
        if self.stream_minibatch_config is not None:
            if self.stream_minibatch_config.num_minibatches < 1:
                raise ValueError("stream_minibatch_config.num_minibatches: must be >= 1")
        if self.num_substeps < 1:
            raise ValueError("num_substeps: must be >= 1")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError("learning_rate: must be a positive number")

    def adam(self) -> types.AdamParams:
        """The optimizer parameters of every step."""
        return types.AdamParams(
            learning_rate=self.learning_rate,
            beta1=self.adam_beta1,
            beta2=self.adam_beta2,
            eps=self.adam_eps,
        )


@dataclass
class TrainResult:
    """What a run ends with."""

    sampling_client: SamplingClient  # bound to the final weights
    steps: int
    metrics: dict[str, float]  # the final evaluation's metrics
    initial_metrics: dict[str, float]  # the evaluation before the first step
    log_dir: str
    state_path: str = ""  # the final state checkpoint (weights + optimizer), if saved
    sampler_path: str = ""  # the final sampler checkpoint (PEFT adapter), if saved


async def evaluate(evaluators: Sequence[Any], sampling_client: SamplingClient) -> dict[str, float]:
    """Run every evaluator on the sampling client: async ones (`evaluate`) are awaited, plain
    callables (the eval package's SamplingClientEvaluator) run in a thread."""
    metrics: dict[str, float] = {}
    for evaluator in evaluators:
        if hasattr(evaluator, "evaluate"):
            metrics.update(await evaluator.evaluate(sampling_client))
        else:
            metrics.update(await asyncio.to_thread(evaluator, sampling_client))
    return metrics


class Run:
    """State shared by the modes: clients, the log, cadences."""

    def __init__(
        self,
        config: Config,
        training_client: TrainingClient,
        evaluators: Sequence[Any],
        total_steps: int,
    ) -> None:
        self.config = config
        self.training_client = training_client
        self.evaluators = list(evaluators)
        self.total_steps = total_steps
        self.reference: SamplingClient | None = None
        if config.kl_penalty_coef:
            self.reference = training_client.service.create_sampling_client(
                base_model=config.kl_reference_model or training_client.base_model
            )
        self.log = RunLog(config.log_dir, total_steps + 1, description="rl")
        self.initial_metrics: dict[str, float] = {}
        self.final_sampler_path = ""  # set once the last weights are saved for sampling

    def policy(self, sampling_client: SamplingClient) -> TreadleTokenCompleter:
        """The token policy sampling `sampling_client` with the run's settings."""
        return TreadleTokenCompleter(
            sampling_client, self.config.max_tokens, self.config.temperature
        )

    async def new_sampling_client(self, *, last: bool = False) -> SamplingClient:
        """Save the current weights for sampling; a client bound to them. After the last step
        they are saved once, as the named final sampler checkpoint when the run keeps one."""
        name = self.config.final_checkpoint if last else None
        client = await self.training_client.save_weights_and_get_sampling_client_async(
            name, self.config.renderer_name if name else None
        )
        if name:
            self.final_sampler_path = client.model_path
        return client

    async def step_extras(self, step: int, sampling_client: SamplingClient) -> dict[str, float]:
        """Evaluations and checkpoints due at the start of `step`."""
        metrics: dict[str, float] = {}
        every = self.config.eval_every
        if self.evaluators and (step == 0 or (every and step % every == 0)):
            metrics.update(await evaluate(self.evaluators, sampling_client))
            if step == 0:
                self.initial_metrics = dict(metrics)
        if self.config.save_every and step and step % self.config.save_every == 0:
            saved = await self.training_client.save_state(
                f"rl-{step:06d}", renderer_name=self.config.renderer_name
            )
            self.log.note(f"step {step}: state checkpoint {saved.path}")
        return metrics

    async def train(self, groups: Sequence[TrajectoryGroup]) -> dict[str, float]:
        """One optimizer step (or `num_substeps`) on the groups' informative data."""
        config = self.config
        return await train_on_groups(
            groups,
            self.training_client,
            config.adam(),
            config.num_substeps,
            config.loss_fn,
            config.loss_fn_config,
            self.reference,
            config.kl_penalty_coef,
        )

    def report_errors(self, step: int, groups: Sequence[TrajectoryGroup]) -> None:
        """Print each excluded rollout above the progress bar."""
        for group in groups:
            for error in group.errors:
                self.log.note(f"step {step}: rollout excluded ({error.where}): {error.message}")

    async def finish(self, sampling_client: SamplingClient) -> TrainResult:
        """Final evaluation, the final checkpoints, the last log entry, the plot."""
        metrics = await evaluate(self.evaluators, sampling_client) if self.evaluators else {}
        result = TrainResult(
            sampling_client, self.total_steps, metrics, self.initial_metrics, self.config.log_dir
        )
        if self.config.final_checkpoint:
            name, renderer = self.config.final_checkpoint, self.config.renderer_name
            state = self.training_client.save_state(name, None, renderer)
            result.sampler_path = self.final_sampler_path
            if not result.sampler_path:  # the last step trained nothing: the weights of before
                sampler = self.training_client.save_weights_for_sampler(name, None, renderer)
                result.sampler_path = (await sampler).path
            result.state_path = (await state).path
            self.log.note(f"checkpoints: {result.state_path} {result.sampler_path}")
        self.log.log(self.total_steps, **metrics)
        self.log.close()
        plot_metrics(self.log.path, self.log.dir / "metrics.png", list(self.config.plot_keys), "RL")
        return result


async def train(
    config: Config,
    training_client: TrainingClient,
    dataset: RLDataset,
    evaluators: Sequence[Any] = (),
) -> TrainResult:
    """Train `training_client` on `dataset` with RL; evaluators run before, every
    `eval_every` steps, and after."""
    config.validate()
    if config.async_config is not None:
        from treadle_cookbook.rl.async_train import do_async_training

        return await do_async_training(config, training_client, dataset, evaluators)
    steps = min(len(dataset), config.max_steps or len(dataset))
    run = Run(config, training_client, evaluators, steps)
    sampling_client = await run.new_sampling_client()
    for step in range(steps):
        started = time.monotonic()
        metrics = await run.step_extras(step, sampling_client)
        builders = dataset.get_batch(step)
        if config.stream_minibatch_config is not None:
            groups, train_metrics = await _stream_minibatch_step(run, builders, sampling_client)
        else:
            policy = run.policy(sampling_client)
            groups = list(await asyncio.gather(*(do_group_rollout(b, policy) for b in builders)))
            sampled = time.monotonic()
            train_metrics = await run.train(groups)
            train_metrics["time/sample"] = sampled - started
        run.report_errors(step, groups)
        if train_metrics.get("trained"):
            sampling_client = await run.new_sampling_client(last=step + 1 == steps)
        metrics.update(compute_trajectory_metrics(groups))
        metrics.update(train_metrics)
        metrics["time/step"] = time.monotonic() - started
        run.log.log(step, **metrics)
    return await run.finish(sampling_client)


async def _stream_minibatch_step(
    run: Run, builders: Sequence[Any], sampling_client: SamplingClient
) -> tuple[list[TrajectoryGroup], dict[str, float]]:
    """Start every rollout; send a forward_backward per minibatch of landed groups; one
    optim_step at the end."""
    config = run.config
    assert config.stream_minibatch_config is not None
    per_minibatch = math.ceil(len(builders) / config.stream_minibatch_config.num_minibatches)
    policy = run.policy(sampling_client)
    tasks = [asyncio.ensure_future(do_group_rollout(b, policy)) for b in builders]
    groups: list[TrajectoryGroup] = []
    waiting: list[TrajectoryGroup] = []
    pending = []
    for landed in asyncio.as_completed(tasks):
        group = await landed
        groups.append(group)
        waiting.append(group)
        if len(waiting) == per_minibatch or len(groups) == len(tasks):
            data = informative_data(waiting)
            waiting = []
            if data:
                pending.append(
                    (
                        data,
                        asyncio.ensure_future(
                            penalize_and_forward_backward(
                                data,
                                run.training_client,
                                config.loss_fn,
                                config.loss_fn_config,
                                run.reference,
                                config.kl_penalty_coef,
                            )
                        ),
                    )
                )
    if not pending:
        return groups, {"trained": 0.0, "datums": 0.0, "minibatches": 0.0}
    all_data, logprobs, metrics = [], [], {"loss:sum": 0.0}
    for data, task in pending:
        output, kl_metrics = await task
        all_data += data
        logprobs += [out["logprobs"].to_numpy() for out in output.loss_fn_outputs]
        metrics["loss:sum"] += output.metrics.get("loss:sum", 0.0)
        metrics.update(kl_metrics)
    metrics.update((await run.training_client.optim_step(config.adam())).metrics)
    metrics.update(compute_kl_sample_train(all_data, logprobs))
    metrics.update(
        {"trained": 1.0, "datums": float(len(all_data)), "minibatches": float(len(pending))}
    )
    return groups, metrics
