"""The training engine: one frozen base model, many models' adapters and optimizer states.

Pure torch, driven by one thread (the cycle runner's worker). `forward_backward` takes every
forward / forward_backward op of a wave and runs them as ONE batched pass: rows are ordered by
op, so each adapter owns one contiguous block of rows (grouped LoRA, grouped_lora.py), and
right-padded to the longest datum (a padding mask; every row's positions start at 0). The
decoder runs once; head.py sweeps the real (unpadded) tokens through the unembedding in chunks,
producing the target logprobs and the loss gradient; one backward then runs through the decoder.
A loss whose tokens depend on their datum's other tokens (gspo's sequence ratio) gets its
per-datum statistics from a forward-only sweep of its own rows first, so that chunks, which cut
datums anywhere, see the same values as a whole-sequence evaluation.
A wave becomes several passes only when it exceeds `max_pass_tokens` padded tokens or holds more
adapters than may be resident at once (residency.py). Gradients accumulate in each adapter's
.grad until `optim_step`. Per-op outputs and metrics come from the detached logprobs, op by op.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import grpc
import numpy as np
import torch

from treadle_models.adapter_files import adapter_files
from treadle_models.devices import pick_device, pick_dtype
from treadle_models.lora import LoraSpec
from treadle_models.sources import ModelSpec, load_model, model_spec
from treadle_runtime.errors import OpError, invalid
from treadle_trainer import metrics
from treadle_trainer.adapters import Adapter
from treadle_trainer.flops import measure_matmul_peak, model_flops
from treadle_trainer.grouped_lora import Group
from treadle_trainer.head import HeadSegment, StackedHead, TokenLoss, unembed
from treadle_trainer.inputs import DatumArrays, LossBatch
from treadle_trainer.lora_bank import LoraBank, adapter_key
from treadle_trainer.losses import (
    FUNCTIONS,
    SEQUENCE_LOSSES,
    loss_metrics,
    with_sequence_log_ratio,
)
from treadle_trainer.optim import AdamConfig, AdamState
from treadle_trainer.passes import plan_passes
from treadle_trainer.residency import Residency, offload_store
from treadle_trainer.rows import PaddedRows, flat_loss_inputs, loss_inputs
from treadle_trainer.state_files import StateContents, TrainerState, encode_state


@dataclass
class ForwardResult:
    """One forward / forward_backward op's per-datum outputs and metrics."""

    loss_fn: str
    logprobs: list[np.ndarray]  # float32 [T_i] per datum
    elementwise_loss: list[np.ndarray]  # float32 [T_i] per datum
    metrics: dict[str, float]
    tokens: int


def default_chunk_rows(device: torch.device, vocab_size: int) -> int:
    """Rows per chunk of the unembedding sweep.

    On a CPU, a chunk's float32 logits stay within 24 MiB so the half-dozen passes over them
    run from the last-level cache (128 rows of a 49152 vocabulary beat 256: docs/benchmarks.md).
    On a GPU, large chunks keep the matmuls large.
    """
    if device.type == "cuda":
        return 8192
    rows = (24 << 20) // (4 * vocab_size)
    return max(16, 1 << max(rows, 1).bit_length() - 1)


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
        max_resident_adapters: int = 0,
        offload: str = "auto",
        offload_dir: str = "",
        head_chunk_rows: int = 0,
        peak_flops: float = 0.0,
    ) -> None:
        self.device = pick_device(device)
        spec = model_spec(base_model)
        limit = min(max_seq_len, spec.max_seq_len) if max_seq_len else spec.max_seq_len
        self.spec: ModelSpec = replace(spec, max_seq_len=limit)
        self.max_pass_tokens = max_pass_tokens
        base = load_model(base_model, dtype=pick_dtype(dtype, self.device), device=self.device)
        self.flops = model_flops(base)
        self.bank = LoraBank(base)
        self.head_chunk_rows = head_chunk_rows or default_chunk_rows(self.device, spec.vocab_size)
        # on the CPU a single adapter's lm_head LoRA is folded into the head's products
        self.stacked_head = StackedHead() if self.device.type == "cpu" else None
        self.residency = Residency(
            max_resident_adapters, offload_store(offload, self.device, offload_dir), self.device
        )
        self.adapters: dict[str, Adapter] = {}
        self.peak_flops = peak_flops
        self.flops_total = 0.0  # model FLOPs of every pass so far
        if peak_flops:
            metrics.PEAK_FLOPS.set(peak_flops)

    def measure_peak(self) -> float:
        """Measure the device's matmul peak in the model's dtype (the denominator of MFU)."""
        size = 8192 if self.device.type == "cuda" else 1536  # about a second at startup
        self.peak_flops = measure_matmul_peak(self.device, self.bank.dtype, size, repeats=8)
        metrics.PEAK_FLOPS.set(self.peak_flops)
        return self.peak_flops

    def close(self) -> None:
        """Delete offloaded adapters' spill files."""
        self.residency.close()

    # adapters

    def adapter(self, model_id: str) -> Adapter:
        """The adapter of `model_id` (resident or not); NOT_FOUND if there is none."""
        adapter = self.adapters.get(model_id)
        if adapter is None:
            raise OpError(
                grpc.StatusCode.NOT_FOUND,
                f"model_id: no adapter for model {model_id!r} on this trainer "
                "(not created, or released)",
                "model_id",
            )
        return adapter

    def resident(self, model_id: str) -> Adapter:
        """The adapter of `model_id`, brought onto the device if it was offloaded."""
        adapter = self.adapter(model_id)
        self.residency.require([adapter])
        return adapter

    def create_adapter(self, model_id: str, tenant: str, spec: LoraSpec, seed: int) -> Adapter:
        """A fresh adapter initialised from `seed`, with zeroed optimizer state."""
        if model_id in self.adapters:
            raise OpError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"model_id: model {model_id!r} already has an adapter here",
                "model_id",
            )
        self.residency.reserve()
        params = self.bank.init_weights(spec, seed)
        adapter = Adapter(model_id, tenant, spec, seed, params, AdamState(params))
        self.adapters[model_id] = adapter
        self.residency.admit(adapter)
        return adapter

    def release_adapter(self, model_id: str) -> None:
        """Drop the adapter, its gradients and optimizer state."""
        adapter = self.adapter(model_id)
        del self.adapters[model_id]
        self.residency.forget(adapter)

    # forward / backward

    def forward_backward(
        self, ops: Sequence[tuple[str, LossBatch]]
    ) -> list[ForwardResult | OpError]:
        """Run all ops as one batched pass; gradients of non-forward_only ops accumulate.

        An op whose loss is not finite (e.g. exp of a huge log-ratio) fails alone and adds no
        gradient, so one bad request cannot poison its adapter.
        """
        adapters = [self.adapter(model_id) for model_id, _ in ops]
        passes = plan_passes(
            [[len(d.tokens) for d in batch.datums] for _, batch in ops],
            [model_id for model_id, _ in ops],
            self.max_pass_tokens,
            self.residency.budget,
        )
        spread = {op for op in range(len(ops)) if sum(op in dict(p) for p in passes) > 1}
        saved = {op: self._grads(adapters[op]) for op in spread if not ops[op][1].forward_only}
        logprobs: dict[tuple[int, int], torch.Tensor] = {}
        failed: dict[int, OpError] = {}
        started = time.perf_counter()
        for part in passes:
            self.residency.require(adapters[op] for op, _ in part)
            self._pass(part, ops, adapters, logprobs, failed)
            metrics.PASS_ROWS.observe(sum(len(rows) for _, rows in part))
        for op, grads in saved.items():
            if op in failed:
                self._restore_grads(adapters[op], grads)
        metrics.STEP_SECONDS.labels("forward_backward").observe(time.perf_counter() - started)
        results: list[ForwardResult | OpError] = [
            failed.get(i) or self._result(batch, [logprobs[i, d] for d in range(len(batch.datums))])
            for i, (_, batch) in enumerate(ops)
        ]
        metrics.TOKENS.inc(sum(r.tokens for r in results if isinstance(r, ForwardResult)))
        return results

    def _pass(
        self,
        part: list[tuple[int, list[int]]],
        ops: Sequence[tuple[str, LossBatch]],
        adapters: list[Adapter],
        logprobs: dict[tuple[int, int], torch.Tensor],
        failed: dict[int, OpError],
    ) -> None:
        """One batched pass over the rows of `part` ((op, datum indices) in row order)."""
        datums = [ops[op][1].datums[d] for op, rows in part for d in rows]
        rows = PaddedRows.of(datums, self.device)
        trains = {op for op, _ in part if not ops[op][1].forward_only and op not in failed}
        groups, segments = self._layout(part, adapters, rows, trains)
        with torch.set_grad_enabled(bool(trains)), self.bank.route(groups):
            hidden = self.bank.hidden(rows.input_ids, rows.attention_mask)
        hidden_MH = rows.real_tokens(hidden.detach().reshape(rows.B * rows.T, -1))
        targets_M = rows.real_tokens(rows.targets.reshape(-1))
        segments = self._losses(part, ops, datums, segments, trains, hidden_MH, targets_M)
        out = unembed(
            hidden_MH,
            self.bank.unembed.weight,
            targets_M,
            segments,
            self.head_chunk_rows,
            self.stacked_head,
        )
        for (op, _), segment, finite in zip(part, segments, out.finite, strict=True):
            if op in trains and not finite:
                trains.discard(op)
                failed[op] = invalid(
                    "data", f"the {ops[op][1].loss_fn} loss is not finite (is lp - logprobs huge?)"
                )
                assert out.grad_hidden is not None
                out.grad_hidden.narrow(0, segment.start, segment.count).zero_()
        if trains and out.grad_hidden is not None:
            hidden.backward(rows.all_tokens(out.grad_hidden).view_as(hidden))
            for (op, _), grads in zip(part, out.lora_grads, strict=True):
                if op in trains and grads is not None:
                    grad_a, grad_bt = grads
                    self._accumulate(adapters[op], self.bank.unembed_path, (grad_a, grad_bt.t()))
        self._count_flops(part, ops, adapters, rows.lengths, trains)
        per_row = iter(out.logprobs.cpu().split(rows.lengths))
        for op, datum_indices in part:
            for d in datum_indices:
                logprobs[op, d] = next(per_row)

    def _layout(
        self,
        part: list[tuple[int, list[int]]],
        adapters: list[Adapter],
        rows: PaddedRows,
        trains: set[int],
    ) -> tuple[list[Group], list[HeadSegment]]:
        """Each op's block of rows: its LoRA group in the decoder and its head segment (whose
        loss `_losses` fills in)."""
        groups, segments, row, token = [], [], 0, 0
        for op, datum_indices in part:
            adapter, n = adapters[op], len(datum_indices)
            weights = self.bank.pass_weights(adapter.params, trainable=op in trains)
            groups.append(Group(row * rows.T, n * rows.T, adapter.scale, weights))
            count = sum(rows.lengths[row : row + n])
            head = weights.get(self.bank.unembed_path)
            lora = None
            if head is not None:  # (A, Bᵀ) in the compute dtype, Bᵀ contiguous for the sweep
                a, b = (t.detach().to(self.bank.dtype) for t in head)
                lora = (a, b.t().contiguous(), adapter.scale)
            segments.append(HeadSegment(token, count, lora, None))
            row, token = row + n, token + count
        return groups, segments

    def _losses(
        self,
        part: list[tuple[int, list[int]]],
        ops: Sequence[tuple[str, LossBatch]],
        datums: list[DatumArrays],
        segments: list[HeadSegment],
        trains: set[int],
        hidden_MH: torch.Tensor,
        targets_M: torch.Tensor,
    ) -> list[HeadSegment]:
        """`segments` with the loss of each training op.

        A loss whose token values depend on their datum's other tokens (gspo's sequence ratio)
        cannot take them from the sweep, which meets a datum chunk by chunk: its segment's
        logprobs are computed first by a forward-only sweep of its own rows (one more logits
        product per token of such an op), and its per-datum statistics from them.
        """
        with_loss, row = [], 0
        for (op, datum_indices), segment in zip(part, segments, strict=True):
            batch, own = ops[op][1], datums[row : row + len(datum_indices)]
            row += len(datum_indices)
            if op not in trains:
                with_loss.append(segment)
                continue
            logprobs = None
            if batch.loss_fn in SEQUENCE_LOSSES:
                logprobs = unembed(
                    hidden_MH.narrow(0, segment.start, segment.count),
                    self.bank.unembed.weight,
                    targets_M.narrow(0, segment.start, segment.count),
                    [replace(segment, start=0)],
                    self.head_chunk_rows,
                    self.stacked_head,
                ).logprobs
            with_loss.append(replace(segment, loss=self._token_loss(batch, own, logprobs)))
        return with_loss

    def _token_loss(
        self, batch: LossBatch, datums: list[DatumArrays], logprobs: torch.Tensor | None
    ) -> TokenLoss:
        """Per-token losses of `datums` (concatenated) as a function of their logprobs;
        `logprobs`, the datums' whole logprobs, give a sequence loss its per-datum statistics."""
        x = flat_loss_inputs(datums, self.device)
        if logprobs is not None:
            x = with_sequence_log_ratio(x, logprobs[None])
        fn, config = FUNCTIONS[batch.loss_fn], batch.config

        def token_loss(lp_n: torch.Tensor, offset: int, n: int) -> torch.Tensor:
            return fn(lp_n[None], x.narrow(offset, n), config).loss_NT[0]

        return token_loss

    def _accumulate(
        self, adapter: Adapter, path: str, grads: tuple[torch.Tensor, torch.Tensor]
    ) -> None:
        for part, grad in zip("AB", grads, strict=True):
            param = adapter.params[adapter_key(path, part)]
            param.grad = grad.contiguous() if param.grad is None else param.grad.add_(grad)

    def _count_flops(
        self,
        part: list[tuple[int, list[int]]],
        ops: Sequence[tuple[str, LossBatch]],
        adapters: list[Adapter],
        lengths: list[int],
        trains: set[int],
    ) -> None:
        total, row = 0.0, 0
        for op, rows in part:
            total += self.flops.pass_flops(
                lengths[row : row + len(rows)], adapters[op].trainable_params, op in trains
            )
            row += len(rows)
        self.flops_total += total
        metrics.FLOPS.inc(total)

    def _grads(self, adapter: Adapter) -> dict[str, torch.Tensor | None]:
        return {k: None if p.grad is None else p.grad.clone() for k, p in adapter.params.items()}

    def _restore_grads(self, adapter: Adapter, grads: dict[str, torch.Tensor | None]) -> None:
        self.residency.require([adapter])
        for key, param in adapter.params.items():
            param.grad = grads[key]

    def _result(self, batch: LossBatch, logprobs: list[torch.Tensor]) -> ForwardResult:
        T = max(len(lp) for lp in logprobs)
        lp_NT = torch.zeros((len(logprobs), T))
        for n, lp in enumerate(logprobs):
            lp_NT[n, : len(lp)] = lp
        x = loss_inputs(batch.datums, T, torch.device("cpu"))
        with torch.no_grad():
            losses = FUNCTIONS[batch.loss_fn](lp_NT, x, batch.config)
        lengths = [len(lp) for lp in logprobs]
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
        adapter = self.resident(model_id)
        started = time.perf_counter()
        norm = adapter.adam.apply(adapter.params, config)
        for param in adapter.params.values():
            param.grad = None
        metrics.STEP_SECONDS.labels("optim_step").observe(time.perf_counter() - started)
        return {"grad_norm:max": norm, "step:max": float(adapter.step)}

    # checkpoints

    def state_files(self, model_id: str) -> dict[str, bytes]:
        """A state checkpoint's files: adapter, optimizer moments and trainer state."""
        adapter = self.resident(model_id)
        state = TrainerState(adapter.step, adapter.seed, adapter.spec, self.spec.name)
        return encode_state(state, adapter.params, adapter.adam.tensors())

    def sampler_files(self, model_id: str) -> dict[str, bytes]:
        """A sampler checkpoint's files: the PEFT adapter only."""
        adapter = self.resident(model_id)
        return adapter_files(adapter.params, adapter.spec, self.spec.name)

    def load_state(self, model_id: str, contents: StateContents, load_optimizer: bool) -> int:
        """Replace weights (and optimizer state and step, or reset them); returns the step.

        Accumulated gradients are cleared. Nothing changes if the checkpoint does not fit.
        """
        adapter = self.resident(model_id)
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


def _mismatch(reason: str) -> OpError:
    return OpError(
        grpc.StatusCode.FAILED_PRECONDITION, f"path: the checkpoint cannot be loaded: {reason}",
        "path",
    )  # fmt: skip
