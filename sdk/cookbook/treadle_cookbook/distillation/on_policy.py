"""On-policy distillation: the student samples, the teacher scores every sampled token with
`compute_logprobs`, and the per-token reverse KL is the only reward.

    kl_t = log p_student(y_t | y_<t) − log p_teacher(y_t | y_<t)      (y sampled from the student)
    advantage_t = −kl_coef · kl_t

trained with the importance_sampling loss. Its expectation is the gradient of −KL(student ‖
teacher), so the student moves towards the teacher exactly where its own samples leave the
teacher's distribution (mode-seeking); the mean of kl_t over the batch is the Monte Carlo
estimate of the reverse KL per token that the run logs (`distill/reverse_kl`).
Advantages are not centred: every token carries its own dense reward.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from treadle import SamplingClient, TrainingClient, types
from treadle_cookbook.rl.data_processing import assemble_training_data, full_sequence
from treadle_cookbook.rl.metrics import compute_kl_sample_train, compute_trajectory_metrics
from treadle_cookbook.rl.rollouts import do_group_rollout
from treadle_cookbook.rl.train import Config, Run, TrainResult
from treadle_cookbook.rl.train_step import train_step
from treadle_cookbook.rl.types import RLDataset, TrajectoryGroup

PLOT_KEYS = ("distill/reverse_kl", "test/reverse_kl", "optim/kl_sample_train_v1")


async def teacher_logprobs(
    teacher: SamplingClient, data_D: Sequence[types.Datum]
) -> list[np.ndarray]:
    """The teacher's logprob of every target token of every datum."""
    results = await asyncio.gather(*(teacher.compute_logprobs(full_sequence(d)) for d in data_D))
    return [np.asarray([0.0 if v is None else v for v in r[1:]], np.float64) for r in results]


async def incorporate_teacher_kl(
    data_D: list[types.Datum], teacher: SamplingClient, kl_coef: float
) -> dict[str, float]:
    """Set each datum's advantages to −kl_coef·(lp_student − lp_teacher) on its sampled tokens
    (in place); returns the mean reverse KL per sampled token."""
    teacher_D = await teacher_logprobs(teacher, data_D)
    total, count = 0.0, 0.0
    for datum, teacher_T in zip(data_D, teacher_D, strict=True):
        mask = datum.loss_fn_inputs["mask"].to_numpy().astype(np.float64)
        kl = (datum.loss_fn_inputs["logprobs"].to_numpy() - teacher_T) * mask
        datum.loss_fn_inputs["advantages"] = types.TensorData.from_numpy(
            (-kl_coef * kl).astype(np.float32)
        )
        total += float(kl.sum())
        count += float(mask.sum())
    return {"distill/reverse_kl": total / count if count else float("nan")}


class TeacherKLEvaluator:
    """Reverse KL per token of the student's own samples against the teacher, on held-out
    prompts (`{name}/reverse_kl`): sample each prompt (seeded) at temperature 1, then score the
    tokens under the teacher."""

    def __init__(
        self,
        dataset: RLDataset,
        teacher: SamplingClient,
        max_tokens: int,
        name: str = "test",
        samples: int = 2,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.teacher = teacher
        self.max_tokens = max_tokens
        self.name = name
        self.samples = samples
        self.seed = seed

    async def evaluate(self, sampling_client: SamplingClient) -> dict[str, float]:
        """Sample, score, average."""
        builders = [b for i in range(len(self.dataset)) for b in self.dataset.get_batch(i)]
        envs = [(await b.make_envs())[0] for b in builders]
        prompts = [(await env.initial_observation()) for env in envs]
        responses = await asyncio.gather(
            *(
                sampling_client.sample(
                    prompt,
                    self.samples,
                    types.SamplingParams(
                        max_tokens=self.max_tokens, stop=stop, seed=self.seed + i, temperature=1.0
                    ),
                )
                for i, (prompt, stop) in enumerate(prompts)
            )
        )
        sequences = [
            (prompt.to_ints(), s)
            for (prompt, _), r in zip(prompts, responses, strict=True)
            for s in r.sequences
            if s.tokens
        ]
        scored = await asyncio.gather(
            *(
                self.teacher.compute_logprobs(types.ModelInput.from_ints(p + s.tokens))
                for p, s in sequences
            )
        )
        kl = [
            float(lp) - float(t)
            for (prompt, s), full in zip(sequences, scored, strict=True)
            for lp, t in zip(s.logprobs or [], full[len(prompt) :], strict=True)
            if t is not None
        ]
        return {
            f"{self.name}/reverse_kl": float(np.mean(kl)) if kl else float("nan"),
            f"{self.name}/tokens": float(len(kl)),
        }


async def train_on_policy(
    config: Config,
    training_client: TrainingClient,
    teacher: SamplingClient,
    dataset: RLDataset,
    evaluators: Sequence[Any] = (),
    kl_coef: float = 1.0,
) -> TrainResult:
    """Distil `teacher` into the student `training_client` on its own samples of `dataset`'s
    prompts. Uses the RL config's learning rate, max_tokens, temperature, loss and cadences."""
    config.validate()
    steps = min(len(dataset), config.max_steps or len(dataset))
    run = Run(config, training_client, evaluators, steps)
    sampling_client = await run.new_sampling_client()
    for step in range(steps):
        started = time.monotonic()
        metrics = await run.step_extras(step, sampling_client)
        policy = run.policy(sampling_client)
        groups: list[TrajectoryGroup] = list(
            await asyncio.gather(*(do_group_rollout(b, policy) for b in dataset.get_batch(step)))
        )
        run.report_errors(step, groups)
        zeros = [np.zeros(len(g.trajectories_G)) for g in groups]
        data_D = assemble_training_data(groups, zeros)
        metrics.update(compute_trajectory_metrics(groups))
        if data_D:
            metrics.update(await incorporate_teacher_kl(data_D, teacher, kl_coef))
            logprobs_D, optim_metrics = await train_step(
                data_D,
                training_client,
                config.adam(),
                config.num_substeps,
                config.loss_fn,
                config.loss_fn_config,
            )
            metrics.update(optim_metrics)
            metrics.update(compute_kl_sample_train(data_D, logprobs_D))
            sampling_client = await run.new_sampling_client(last=step + 1 == steps)
        metrics["time/step"] = time.monotonic() - started
        run.log.log(step, **metrics)
    return await run.finish(sampling_client)
