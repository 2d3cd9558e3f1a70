"""The training engine: one frozen base model, many models' adapters and optimizer states.

Pure torch, driven by one thread (the cycle runner's worker). `forward_backward` takes every
forward / forward_backward op of a wave and runs them as ONE batched pass (split only when the
padded batch exceeds `max_pass_tokens`): datums are right-padded rows, each row runs through its
own model's adapter, logprobs of the targets come from `treadle_models.target_logprobs` over the
whole batch, and backward runs once on the sum of the ops' summed losses. Gradients accumulate in
each adapter's .grad until `optim_step`. Per-op outputs and metrics are then computed from the
detached logprobs, op by op.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import grpc
import numpy as np
import torch

from treadle_models.adapter_files import adapter_files
from treadle_models.logprobs import target_logprobs
from treadle_models.lora import LoraSpec
from treadle_models.sources import ModelSpec, load_model, model_spec
from treadle_runtime.errors import OpError, invalid
from treadle_trainer import metrics
from treadle_trainer.inputs import DatumArrays, LossBatch
from treadle_trainer.lora_bank import LoraBank
from treadle_trainer.losses import LOSSES, LossInputs, loss_metrics
from treadle_trainer.optim import AdamConfig, AdamState
from treadle_trainer.state_files import StateContents, TrainerState, encode_state

PAD_ID = 0


@dataclass
class Adapter:
    """One training model resident on this trainer."""

    model_id: str
    name: str  # peft adapter name
    tenant: str
    spec: LoraSpec
    seed: int
    params: dict[str, torch.nn.Parameter]
    adam: AdamState

    @property
    def step(self) -> int:
        """Optimizer steps taken."""
        return self.adam.step

    @property
    def trainable_params(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.params.values())


@dataclass
class ForwardResult:
    """One forward / forward_backward op's per-datum outputs and metrics."""

    loss_fn: str
    logprobs: list[np.ndarray]  # float32 [T_i] per datum
    elementwise_loss: list[np.ndarray]  # float32 [T_i] per datum
    metrics: dict[str, float]
    tokens: int


@dataclass
class _Row:
    op: int
    datum: DatumArrays
    logprobs_T: torch.Tensor | None = field(default=None)


def pick_device(device: str) -> torch.device:
    """`auto` means cuda when present."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` means bfloat16 on cuda, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


class TrainerEngine:
    """Adapters of many training models over one base model."""

    def __init__(
        self,
        base_model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_seq_len: int = 0,
        max_pass_tokens: int = 8192,
    ) -> None:
        self.device = pick_device(device)
        spec = model_spec(base_model)
        limit = min(max_seq_len, spec.max_seq_len) if max_seq_len else spec.max_seq_len
        self.spec: ModelSpec = replace(spec, max_seq_len=limit)
        self.max_pass_tokens = max_pass_tokens
        base = load_model(base_model, dtype=pick_dtype(dtype, self.device), device=self.device)
        self.bank = LoraBank(base)
        self.adapters: dict[str, Adapter] = {}

    # adapters

    def adapter(self, model_id: str) -> Adapter:
        """The resident adapter of `model_id`; NOT_FOUND if there is none."""
        adapter = self.adapters.get(model_id)
        if adapter is None:
            raise OpError(
                grpc.StatusCode.NOT_FOUND,
                f"model_id: no adapter for model {model_id!r} on this trainer "
                "(not created, or released)",
                "model_id",
            )
        return adapter

    def create_adapter(self, model_id: str, tenant: str, spec: LoraSpec, seed: int) -> Adapter:
        """A fresh adapter initialised from `seed`, with zeroed optimizer state."""
        if model_id in self.adapters:
            raise OpError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"model_id: model {model_id!r} already has an adapter here",
                "model_id",
            )
        name = self.bank.add(spec, seed)
        params = self.bank.parameters(name)
        adapter = Adapter(model_id, name, tenant, spec, seed, params, AdamState(params))
        self.adapters[model_id] = adapter
        metrics.ADAPTERS.set(len(self.adapters))
        return adapter

    def release_adapter(self, model_id: str) -> None:
        """Drop the adapter, its gradients and optimizer state."""
        adapter = self.adapter(model_id)
        del self.adapters[model_id]
        self.bank.remove(adapter.name)
        metrics.ADAPTERS.set(len(self.adapters))

    # forward / backward

    def forward_backward(
        self, ops: Sequence[tuple[str, LossBatch]]
    ) -> list[ForwardResult | OpError]:
        """Run all ops as one batched pass; gradients of non-forward_only ops accumulate.

        An op whose loss is not finite (e.g. exp of a huge log-ratio) fails alone and adds no
        gradient, so one bad request cannot poison its adapter.
        """
        adapters = [self.adapter(model_id) for model_id, _ in ops]
        rows = [_Row(i, datum) for i, (_, batch) in enumerate(ops) for datum in batch.datums]
        failed: dict[int, OpError] = {}
        started = time.perf_counter()
        for chunk in self._chunks(rows):
            self._pass(chunk, ops, adapters, failed)
        metrics.STEP_SECONDS.labels("forward_backward").observe(time.perf_counter() - started)
        metrics.PASS_ROWS.observe(len(rows))
        results: list[ForwardResult | OpError] = [
            failed.get(i) or self._result(batch, [r for r in rows if r.op == i])
            for i, (_, batch) in enumerate(ops)
        ]
        metrics.TOKENS.inc(sum(r.tokens for r in results if isinstance(r, ForwardResult)))
        return results

    def _chunks(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows longest first, cut into batches of at most max_pass_tokens padded tokens."""
        ordered = sorted(rows, key=lambda r: -len(r.datum.tokens))
        chunks: list[list[_Row]] = []
        for row in ordered:
            if chunks and (len(chunks[-1]) + 1) * len(chunks[-1][0].datum.tokens) <= (
                self.max_pass_tokens
            ):
                chunks[-1].append(row)
            else:
                chunks.append([row])
        return chunks

    def _pass(
        self,
        rows: list[_Row],
        ops: Sequence[tuple[str, LossBatch]],
        adapters: list[Adapter],
        failed: dict[int, OpError],
    ) -> None:
        T = max(len(r.datum.tokens) for r in rows)
        input_ids = torch.full((len(rows), T), PAD_ID, dtype=torch.long)
        targets = torch.full((len(rows), T), PAD_ID, dtype=torch.long)
        attention = torch.zeros((len(rows), T), dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row.datum.tokens)
            input_ids[b, :n] = torch.tensor(row.datum.tokens)
            targets[b, :n] = torch.tensor(row.datum.targets)
            attention[b, :n] = 1
        training = any(not ops[r.op][1].forward_only for r in rows)
        with torch.set_grad_enabled(training):
            logits = self.bank.logits(
                input_ids.to(self.device),
                attention.to(self.device),
                [adapters[r.op].name for r in rows],
            )
            lp_BT = target_logprobs(logits, targets.to(self.device))
            del logits
            total: torch.Tensor | None = None
            for op in sorted({r.op for r in rows}):
                batch = ops[op][1]
                if batch.forward_only or op in failed:
                    continue
                index = [b for b, r in enumerate(rows) if r.op == op]
                x = loss_inputs([rows[b].datum for b in index], T, self.device)
                loss = LOSSES[batch.loss_fn].fn(lp_BT[index], x, batch.config).loss_NT.sum()
                if not bool(torch.isfinite(loss)):
                    failed[op] = invalid(
                        "data", f"the {batch.loss_fn} loss is not finite (is lp - logprobs huge?)"
                    )
                    continue
                total = loss if total is None else total + loss
            if total is not None:
                total.backward()
        lp_cpu = lp_BT.detach().float().cpu()
        for b, row in enumerate(rows):
            row.logprobs_T = lp_cpu[b, : len(row.datum.tokens)]

    def _result(self, batch: LossBatch, rows: list[_Row]) -> ForwardResult:
        T = max(len(r.datum.tokens) for r in rows)
        lp_NT = torch.zeros((len(rows), T))
        for n, row in enumerate(rows):
            assert row.logprobs_T is not None
            lp_NT[n, : len(row.logprobs_T)] = row.logprobs_T
        x = loss_inputs([r.datum for r in rows], T, torch.device("cpu"))
        with torch.no_grad():
            losses = LOSSES[batch.loss_fn].fn(lp_NT, x, batch.config)
        lengths = [len(r.datum.tokens) for r in rows]
        return ForwardResult(
            loss_fn=batch.loss_fn,
            logprobs=[lp_NT[n, :t].numpy().copy() for n, t in enumerate(lengths)],
            elementwise_loss=[
                losses.loss_NT[n, :t].float().numpy().copy() for n, t in enumerate(lengths)
            ],
            metrics=loss_metrics(batch.loss_fn, losses, x),
            tokens=sum(lengths),
        )

    # optimizer

    def optim_step(self, model_id: str, config: AdamConfig) -> dict[str, float]:
        """One AdamW step on the accumulated gradients, which are then cleared."""
        adapter = self.adapter(model_id)
        started = time.perf_counter()
        norm = adapter.adam.apply(adapter.params, config)
        for param in adapter.params.values():
            param.grad = None
        metrics.STEP_SECONDS.labels("optim_step").observe(time.perf_counter() - started)
        return {"grad_norm:max": norm, "step:max": float(adapter.step)}

    # checkpoints

    def state_files(self, model_id: str) -> dict[str, bytes]:
        """A state checkpoint's files: adapter, optimizer moments and trainer state."""
        adapter = self.adapter(model_id)
        state = TrainerState(adapter.step, adapter.seed, adapter.spec, self.spec.name)
        return encode_state(state, adapter.params, adapter.adam.tensors())

    def sampler_files(self, model_id: str) -> dict[str, bytes]:
        """A sampler checkpoint's files: the PEFT adapter only."""
        adapter = self.adapter(model_id)
        return adapter_files(adapter.params, adapter.spec, self.spec.name)

    def load_state(self, model_id: str, contents: StateContents, load_optimizer: bool) -> int:
        """Replace weights (and optimizer state and step, or reset them); returns the step.

        Accumulated gradients are cleared. Nothing changes if the checkpoint does not fit.
        """
        adapter = self.adapter(model_id)
        state = contents.state
        if state.base_model != self.spec.name:
            raise _mismatch(f"its base model is {state.base_model!r}, not {self.spec.name!r}")
        if replace(state.spec, alpha=state.spec.effective_alpha) != adapter.spec:
            raise _mismatch(f"its LoRA config {state.spec} differs from the model's {adapter.spec}")
        if set(contents.weights) != set(adapter.params) or any(
            contents.weights[k].shape != p.shape for k, p in adapter.params.items()
        ):
            raise _mismatch("its adapter tensors do not fit the model's adapter")
        if load_optimizer and contents.optimizer is None:
            raise _mismatch("it holds no optimizer state")
        if load_optimizer:
            assert contents.optimizer is not None
            try:
                adapter.adam.load(contents.optimizer, state.step)
            except ValueError as exc:
                raise _mismatch(str(exc)) from None
        else:
            adapter.adam.reset()
        with torch.no_grad():
            for key, param in adapter.params.items():
                param.copy_(contents.weights[key])
                param.grad = None
        return adapter.step


def loss_inputs(datums: list[DatumArrays], T: int, device: torch.device) -> LossInputs:
    """Per-token loss inputs of datums right-padded to [N, T] (weights default to 1)."""
    N = len(datums)
    mask, weights, advantages, q = (torch.zeros((N, T)) for _ in range(4))
    for n, d in enumerate(datums):
        t = len(d.tokens)
        mask[n, :t] = 1.0
        weights[n, :t] = 1.0 if d.weights is None else torch.tensor(d.weights)
        if d.advantages is not None:
            advantages[n, :t] = torch.tensor(d.advantages)
        if d.logprobs is not None:
            q[n, :t] = torch.tensor(d.logprobs)
    return LossInputs(mask.to(device), weights.to(device), advantages.to(device), q.to(device))


def _mismatch(reason: str) -> OpError:
    return OpError(
        grpc.StatusCode.FAILED_PRECONDITION, f"path: the checkpoint cannot be loaded: {reason}",
        "path",
    )  # fmt: skip
