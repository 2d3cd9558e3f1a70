"""DPO (direct preference optimization) on `forward_backward_custom`, with the run's initial
weights as the frozen reference.

    π(y) = Σ_t w_t · lp_t(y)           (the reply's log-likelihood under the policy; ref likewise)
    loss = mean over pairs of −log σ(β·[(π(chosen) − ref(chosen)) − (π(rejected) − ref(rejected))])

Key decisions:
- The reference is the training client's own weights before the first step: one batched
  `forward` over every pair, submitted before any optim_step, so it is exactly the initial
  weights (the base model for a fresh adapter, or a loaded SFT checkpoint), frozen, and computed
  by the same engine as the policy's logprobs (the implicit rewards start at exactly zero). It
  costs one forward per pair, like asking a sampler checkpoint with compute_logprobs, but in a
  few large batched passes.
- The loss runs here with torch autograd on the logprobs the service returns;
  forward_backward_custom turns its gradient into per-token weights of one forward_backward
  (about 1.5× the cost of a plain step). torch is imported only inside the loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from treadle import TrainingClient, types
from treadle.contract.losses import CROSS_ENTROPY
from treadle_cookbook.preference.data import PreferenceDataset
from treadle_cookbook.run_log import RunLog, plot_metrics

PLOT_KEYS = ("dpo_loss", "accuracy", "margin", "test/pref_accuracy", "test/logprob_margin")


def dpo_loss(
    chosen_logprobs: Sequence[Any],
    rejected_logprobs: Sequence[Any],
    chosen_ref_logprobs: Sequence[float],
    rejected_ref_logprobs: Sequence[float],
    beta: float,
) -> tuple[Any, dict[str, float]]:
    """The DPO loss over pairs of summed reply logprobs (torch scalars for the policy)."""
    import torch
    import torch.nn.functional as F

    chosen = torch.stack(list(chosen_logprobs)) - torch.tensor(chosen_ref_logprobs)
    rejected = torch.stack(list(rejected_logprobs)) - torch.tensor(rejected_ref_logprobs)
    logits = beta * (chosen - rejected)
    loss = -F.logsigmoid(logits).mean()
    return loss, {
        "dpo_loss": float(loss.detach()),
        "accuracy": float((logits > 0).float().mean()),
        "margin": float(logits.detach().mean()),
        "chosen_reward": float(beta * chosen.detach().mean()),
        "rejected_reward": float(beta * rejected.detach().mean()),
    }


def reply_logprob(logprobs_T: Any, datum: types.Datum) -> Any:
    """Σ w·lp of one datum (torch in, torch out; numpy in, float out)."""
    weights = datum.loss_fn_inputs["weights"].to_numpy()
    if isinstance(logprobs_T, np.ndarray):
        return float(np.dot(logprobs_T.astype(np.float64), weights))
    import torch

    return torch.dot(logprobs_T.float(), torch.from_numpy(weights.copy()).float())


def make_dpo_loss_fn(reference_logprobs_D: Sequence[float], beta: float) -> Any:
    """The custom loss for forward_backward_custom over datums [chosen_0, rejected_0, ...]."""

    def loss_fn(data: list[types.Datum], logprobs: list[Any]) -> tuple[Any, dict[str, float]]:
        replies = [reply_logprob(lp, d) for lp, d in zip(logprobs, data, strict=True)]
        return dpo_loss(
            replies[0::2],
            replies[1::2],
            list(reference_logprobs_D[0::2]),
            list(reference_logprobs_D[1::2]),
            beta,
        )

    return loss_fn


def reply_logprobs(
    training_client: TrainingClient, data: Sequence[types.Datum], chunk: int = 64
) -> list[float]:
    """Σ w·lp of every datum under the training client's current weights (batched forwards,
    all submitted before any is awaited)."""
    futures = [
        training_client.forward(list(data[i : i + chunk]), CROSS_ENTROPY)
        for i in range(0, len(data), chunk)
    ]
    outputs = [out for future in futures for out in future.result().loss_fn_outputs]
    return [
        reply_logprob(out["logprobs"].to_numpy(), datum)
        for out, datum in zip(outputs, data, strict=True)
    ]


class PreferenceEvaluator:
    """Held-out preference accuracy of the current weights: the fraction of pairs whose chosen
    reply is more likely than the rejected one (`{name}/pref_accuracy`, and per pair kind
    `{name}/pref_accuracy/{kind}`), and the mean log-likelihood margin (`{name}/logprob_margin`).
    One `forward`, no sampling."""

    def __init__(self, dataset: PreferenceDataset, name: str = "test") -> None:
        self.data = [datum for pair in dataset.pairs for datum in pair]
        self.kinds = np.asarray(dataset.kinds)
        self.name = name

    def margins(self, training_client: TrainingClient) -> np.ndarray:
        """π(chosen) − π(rejected) per pair."""
        replies = reply_logprobs(training_client, self.data)
        return np.asarray(replies[0::2]) - np.asarray(replies[1::2])

    def __call__(self, training_client: TrainingClient) -> dict[str, float]:
        margins = self.margins(training_client)
        metrics = {
            f"{self.name}/pref_accuracy": float((margins > 0).mean()),
            f"{self.name}/logprob_margin": float(margins.mean()),
        }
        for kind in sorted(set(self.kinds.tolist()) - {""}):
            chosen = margins[self.kinds == kind]
            metrics[f"{self.name}/pref_accuracy/{kind}"] = float((chosen > 0).mean())
        return metrics


@dataclass
class DPOConfig:
    """A DPO run."""

    log_dir: str  # metrics.jsonl and metrics.png go here
    learning_rate: float = 1e-4  # Adam learning rate
    beta: float = 0.1  # DPO temperature: how far from the reference the policy may move
    num_epochs: int = 1  # passes over the pairs
    max_steps: int | None = None  # stop after N steps
    eval_every: int = 5  # evaluators every N steps (and before and after)
    final_checkpoint: str = "final"  # name of the state + sampler checkpoints saved at the end
    renderer_name: str | None = None  # for checkpoint metadata (None: the training client's)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    plot_keys: Sequence[str] = field(default_factory=lambda: PLOT_KEYS)

    def validate(self) -> None:
        """Refuse settings that cannot run, naming the field."""
        if not math.isfinite(self.beta) or self.beta <= 0:
            raise ValueError("beta: must be a positive number")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError("learning_rate: must be a positive number")
        if self.num_epochs < 1:
            raise ValueError("num_epochs: must be >= 1")


@dataclass
class DPOResult:
    """What a DPO run ends with."""

    steps: int
    initial_metrics: dict[str, float]
    metrics: dict[str, float]
    log_dir: str
    state_path: str = ""
    sampler_path: str = ""


def train_dpo(
    config: DPOConfig,
    training_client: TrainingClient,
    dataset: PreferenceDataset,
    evaluators: Sequence[Any] = (),
) -> DPOResult:
    """Train on preference pairs with DPO; evaluators (TrainingClientEvaluators) run before,
    every `eval_every` steps, and after."""
    config.validate()
    schedule = [(e, i) for e in range(config.num_epochs) for i in range(len(dataset))]
    schedule = schedule[: config.max_steps] if config.max_steps else schedule
    adam = types.AdamParams(
        learning_rate=config.learning_rate,
        beta1=config.adam_beta1,
        beta2=config.adam_beta2,
        eps=config.adam_eps,
    )
    log = RunLog(config.log_dir, len(schedule) + 1, description="dpo")
    # the frozen reference: every pair the run will train on, under the initial weights,
    # before the first update
    used = sorted({i for epoch, index in schedule for i in dataset.batch_indices(index, epoch)})
    replies = reply_logprobs(training_client, [d for i in used for d in dataset.pairs[i]])
    reference = dict(zip(used, np.asarray(replies).reshape(-1, 2).tolist(), strict=True))

    def evaluate() -> dict[str, float]:
        metrics: dict[str, float] = {}
        for evaluator in evaluators:
            metrics.update(evaluator(training_client))
        return metrics

    def finish(step: int, pending: tuple[Any, Any, dict[str, float]]) -> None:
        fb, optim, metrics = pending
        log.log(step, **{**metrics, **fb.result().metrics, **optim.result().metrics})

    initial = evaluate()
    pending: tuple[Any, Any, dict[str, float]] | None = None
    for step, (epoch, index) in enumerate(schedule):
        metrics = dict(initial) if step == 0 else {}
        if step and config.eval_every and step % config.eval_every == 0:
            metrics = evaluate()  # its forward runs after the previous step's optim_step
        pairs = dataset.batch_indices(index, epoch)
        batch = [datum for i in pairs for datum in dataset.pairs[i]]
        loss_fn = make_dpo_loss_fn([lp for i in pairs for lp in reference[i]], config.beta)
        submitted = (
            training_client.forward_backward_custom(batch, loss_fn),
            training_client.optim_step(adam),
            {**metrics, "pairs": float(len(pairs))},
        )
        if pending is not None:  # await the previous step only now: one step per clock cycle
            finish(step - 1, pending)
        pending = submitted
    if pending is not None:
        finish(len(schedule) - 1, pending)
    result = DPOResult(len(schedule), initial, evaluate(), config.log_dir)
    if config.final_checkpoint:
        name, renderer = config.final_checkpoint, config.renderer_name
        result.state_path = training_client.save_state(name, None, renderer).result().path
        sampler = training_client.save_weights_for_sampler(name, None, renderer)
        result.sampler_path = sampler.result().path
        log.note(f"checkpoints: {result.state_path} {result.sampler_path}")
    log.log(len(schedule), **result.metrics)
    log.close()
    plot_metrics(log.path, log.dir / "metrics.png", list(config.plot_keys), "DPO")
    return result
