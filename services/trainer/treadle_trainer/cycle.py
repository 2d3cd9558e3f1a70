"""Executing one CyclePlan in waves, and turning each op into its OpResult.

Wave k holds the k-th op of every model in the plan (a model's ops keep list order). In a wave,
all forward / forward_backward ops go to the engine together as one batched pass; every other
op runs on its own. Torch work runs on one dedicated worker thread (`torch_worker`), so the event
loop (and the RunCycles stream) stays responsive and the engine is only ever touched by one
thread; checkpoint transfers are awaited on the loop, overlapping the wave's torch work. A failing
op yields an error result for that op alone. Plans run one at a time, whichever stream sends them.

The engine is also built on that thread. Each thread that runs a parallel torch op keeps an
OpenMP thread pool of its own, and once a process holds more OpenMP threads than cores, libgomp
stops spinning at its barriers and sleeps in the kernel instead: one extra pool (a loader thread
that ran one matmul) measurably slows a small model's training step (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import grpc

from treadle import tensors
from treadle.paths import CheckpointPath, parse_path, valid_name
from treadle.v1 import common_pb2, trainer_pb2
from treadle_models.lora import LoraSpec
from treadle_runtime.capability import model_capability
from treadle_runtime.errors import OpError, as_op_error, error_detail, invalid
from treadle_trainer import metrics
from treadle_trainer.adapters import Adapter
from treadle_trainer.engine import ForwardResult, TrainerEngine
from treadle_trainer.inputs import (
    LossBatch,
    lora_config,
    parse_adam,
    parse_forward_backward,
    parse_lora,
)
from treadle_trainer.losses import RUNS
from treadle_trainer.state_files import StateContents, decode_state

log = logging.getLogger(__name__)
T = TypeVar("T")


class CheckpointStore(Protocol):
    """The Checkpoints service as the trainer uses it (treadle_runtime.checkpoint_client)."""

    async def put(
        self,
        tenant: str,
        info: common_pb2.CheckpointInfo,
        files: dict[str, bytes],
        *,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
    ) -> common_pb2.CheckpointInfo: ...

    async def get(
        self, tenant: str, path: str
    ) -> tuple[common_pb2.CheckpointInfo, dict[str, bytes]]: ...


def plan_waves(ops: Sequence[trainer_pb2.PlannedOp]) -> list[list[trainer_pb2.PlannedOp]]:
    """Wave k = the k-th op of each model, models in order of first appearance."""
    per_model: dict[str, list[trainer_pb2.PlannedOp]] = {}
    for op in ops:
        per_model.setdefault(op.model_id, []).append(op)
    depth = max((len(model_ops) for model_ops in per_model.values()), default=0)
    return [[m[k] for m in per_model.values() if k < len(m)] for k in range(depth)]


def torch_worker() -> ThreadPoolExecutor:
    """The one thread that builds the engine and runs every torch op of a trainer."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainer-torch")


class CycleRunner:
    """Runs cycle plans against one engine and a checkpoint store; `worker` is the thread the
    engine was built on (a new one when not given); `loss_fns` are the losses it runs and
    reports (every loss of treadle_trainer.losses unless narrowed)."""

    def __init__(
        self,
        engine: TrainerEngine,
        store: CheckpointStore | None,
        *,
        state_ttl_seconds: int = 0,
        sampler_ttl_seconds: int = 0,
        worker: ThreadPoolExecutor | None = None,
        loss_fns: tuple[str, ...] = RUNS,
    ) -> None:
        self.engine = engine
        self.store = store
        self.loss_fns = loss_fns
        self.default_ttl = {
            common_pb2.CHECKPOINT_KIND_STATE: state_ttl_seconds or None,
            common_pb2.CHECKPOINT_KIND_SAMPLER: sampler_ttl_seconds or None,
        }
        self._worker = worker or torch_worker()
        self._lock = asyncio.Lock()

    async def _torch(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(fn, *args))

    async def close(self) -> None:
        """Stop the torch worker thread and close the checkpoint store's channel."""
        await asyncio.to_thread(self._worker.shutdown, wait=True)
        self.engine.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    def info(self) -> trainer_pb2.TrainerInfo:
        """The served model's capability, the adapter count and the device."""
        return trainer_pb2.TrainerInfo(
            model=model_capability(self.engine.spec, self.loss_fns),
            adapters=len(self.engine.adapters),
            device=str(self.engine.device),
        )

    async def run(self, plan: trainer_pb2.CyclePlan) -> AsyncIterator[trainer_pb2.TrainerEvent]:
        """Execute `plan`: each op's result as its wave ends, then CycleDone."""
        async with self._lock:
            started = time.perf_counter()
            flops_before = self.engine.flops_total
            waves = plan_waves(plan.ops)
            tokens = 0
            for k, wave in enumerate(waves):
                metrics.WAVE_SIZE.observe(len(wave))
                outcomes = await self._run_wave(wave)
                for op, outcome in zip(wave, outcomes, strict=True):
                    if isinstance(outcome, ForwardResult):
                        tokens += outcome.tokens
                    yield trainer_pb2.TrainerEvent(op_result=_op_result(op, k, outcome))
            busy = time.perf_counter() - started
            metrics.STEP_SECONDS.labels("cycle").observe(busy)
            metrics.BUSY_SECONDS.inc(busy)
            metrics.CYCLES.inc()
            if self.engine.peak_flops and busy > 0:
                flops = self.engine.flops_total - flops_before
                metrics.MFU.set(flops / busy / self.engine.peak_flops)
            done = trainer_pb2.CycleDone(
                cycle=plan.cycle, busy_seconds=busy, waves=len(waves), tokens=tokens
            )
            yield trainer_pb2.TrainerEvent(cycle_done=done)

    async def _run_wave(self, wave: list[trainer_pb2.PlannedOp]) -> list[Any]:
        """Each op's outcome (a result message, a ForwardResult or an OpError), in wave order."""
        batched = [op for op in wave if op.WhichOneof("op") == "forward_backward"]
        singles = [op for op in wave if op.WhichOneof("op") != "forward_backward"]
        fb_outcomes, *single_outcomes = await asyncio.gather(
            self._forward_backward(batched), *(self._guarded(self._single, op) for op in singles)
        )
        by_op = dict(zip(map(id, batched + singles), [*fb_outcomes, *single_outcomes], strict=True))
        return [by_op[id(op)] for op in wave]

    async def _guarded(self, fn: Callable[..., Any], op: trainer_pb2.PlannedOp) -> Any:
        try:
            return await fn(op)
        except Exception as exc:  # fails this op alone
            return as_op_error(exc, f"op {op.op_id}")

    # forward / forward_backward

    async def _forward_backward(self, ops: list[trainer_pb2.PlannedOp]) -> list[Any]:
        if not ops:
            return []
        try:
            return await self._torch(self._forward_backward_sync, ops)
        except Exception as exc:  # fails the wave's passes, not the cycle
            return [as_op_error(exc, f"batched pass of {len(ops)} ops")] * len(ops)

    def _forward_backward_sync(self, ops: list[trainer_pb2.PlannedOp]) -> list[Any]:
        spec = self.engine.spec
        outcomes: list[Any] = []
        ready: list[tuple[str, LossBatch]] = []
        for op in ops:
            try:
                self.engine.adapter(op.model_id)
                batch = parse_forward_backward(
                    op.forward_backward, spec.vocab_size, spec.max_seq_len, self.loss_fns
                )
            except Exception as exc:  # fails this op alone
                outcomes.append(as_op_error(exc, f"op {op.op_id}"))
                continue
            outcomes.append(len(ready))
            ready.append((op.model_id, batch))
        results = self.engine.forward_backward(ready) if ready else []
        return [o if isinstance(o, OpError) else results[o] for o in outcomes]

    # everything else

    async def _single(self, op: trainer_pb2.PlannedOp) -> Any:
        kind = op.WhichOneof("op")
        if kind == "create_adapter":
            return await self._create(op.model_id, op.create_adapter)
        if kind == "optim_step":
            config = parse_adam(op.optim_step.adam_params)
            step_metrics = await self._torch(self.engine.optim_step, op.model_id, config)
            return common_pb2.OptimStepResponse(metrics=step_metrics)
        if kind == "save_checkpoint":
            return await self._save(op.model_id, op.save_checkpoint)
        if kind == "load_state":
            return await self._load(op.model_id, op.load_state)
        if kind == "release_adapter":
            await self._torch(self.engine.release_adapter, op.model_id)
            return trainer_pb2.ReleaseAdapterResult()
        raise invalid("op", "the planned op names no operation")

    async def _create(
        self, model_id: str, op: trainer_pb2.CreateAdapterOp
    ) -> trainer_pb2.CreateAdapterResult:
        if op.base_model != self.engine.spec.name:
            raise invalid(
                "base_model",
                f"{op.base_model!r} is not served here (this trainer serves "
                f"{self.engine.spec.name!r})",
            )
        if not op.tenant:
            raise invalid("tenant", "is required")
        if model_id in self.engine.adapters:
            raise OpError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"model_id: model {model_id!r} already has an adapter here",
                "model_id",
            )
        contents = None
        if op.from_state_path:
            contents = await self._fetch_state(op.tenant, op.from_state_path, "from_state_path")
            spec = contents.state.spec
            if op.lora_config.rank and parse_lora(op.lora_config) != spec:
                raise invalid("lora_config", f"differs from the checkpoint's {spec}")
            seed = contents.state.seed
        else:
            spec, seed = parse_lora(op.lora_config), op.seed
        adapter = await self._torch(
            self._create_sync, model_id, op.tenant, spec, seed, contents, op.load_optimizer
        )
        return trainer_pb2.CreateAdapterResult(
            step=adapter.step, trainable_params=adapter.trainable_params
        )

    def _create_sync(
        self,
        model_id: str,
        tenant: str,
        spec: LoraSpec,
        seed: int,
        contents: StateContents | None,
        load_optimizer: bool,
    ) -> Adapter:
        adapter = self.engine.create_adapter(model_id, tenant, spec, seed)
        if contents is not None:
            try:
                self.engine.load_state(model_id, contents, load_optimizer)
            except OpError as exc:
                self.engine.release_adapter(model_id)
                raise OpError(exc.code, exc.message.replace("path:", "from_state_path:", 1),
                              "from_state_path") from None  # fmt: skip
        return adapter

    async def _save(
        self, model_id: str, op: common_pb2.SaveCheckpointRequest
    ) -> common_pb2.SaveCheckpointResponse:
        if op.kind not in (common_pb2.CHECKPOINT_KIND_STATE, common_pb2.CHECKPOINT_KIND_SAMPLER):
            raise invalid("kind", "must be CHECKPOINT_KIND_STATE or CHECKPOINT_KIND_SAMPLER")
        if op.name and not valid_name(op.name):
            raise invalid("name", f"{op.name!r} is not a valid name (letters, digits, . _ : -)")
        if op.HasField("ttl_seconds") and op.ttl_seconds < 0:
            raise invalid("ttl_seconds", f"must be >= 0, got {op.ttl_seconds}")
        adapter = self.engine.adapter(model_id)
        store = self._require_store()
        state = op.kind == common_pb2.CHECKPOINT_KIND_STATE
        export = self.engine.state_files if state else self.engine.sampler_files
        files, step = await self._torch(lambda: (export(model_id), adapter.step))
        name = op.name or f"step-{step:06d}"
        path = CheckpointPath(model_id, "state" if state else "sampler", name)
        info = common_pb2.CheckpointInfo(
            path=str(path),
            run_id=model_id,
            name=name,
            kind=op.kind,
            base_model=self.engine.spec.name,
            lora_config=lora_config(adapter.spec),
            step=step,
            renderer_name=op.renderer_name,
            tenant=adapter.tenant,
            has_optimizer=state,
        )
        ttl = op.ttl_seconds if op.HasField("ttl_seconds") else self.default_ttl[op.kind]
        stored = await store.put(
            adapter.tenant, info, files, ttl_seconds=ttl, overwrite=op.overwrite
        )
        return common_pb2.SaveCheckpointResponse(checkpoint=stored)

    async def _load(
        self, model_id: str, op: common_pb2.LoadStateRequest
    ) -> common_pb2.LoadStateResponse:
        adapter = self.engine.adapter(model_id)
        contents = await self._fetch_state(adapter.tenant, op.path, "path")
        step = await self._torch(self.engine.load_state, model_id, contents, op.load_optimizer)
        return common_pb2.LoadStateResponse(step=step)

    async def _fetch_state(self, tenant: str, path: str, field: str) -> StateContents:
        try:
            parsed = parse_path(path)
        except ValueError as exc:
            raise invalid(field, str(exc)) from None
        if parsed.kind != "state":
            raise invalid(field, f"{path} is a sampler checkpoint; a state checkpoint is needed")
        _, files = await self._require_store().get(tenant, path)
        try:
            return decode_state(files)
        except ValueError as exc:
            raise OpError(
                grpc.StatusCode.FAILED_PRECONDITION, f"{field}: {path}: {exc}", field
            ) from None

    def _require_store(self) -> CheckpointStore:
        if self.store is None:
            raise OpError(
                grpc.StatusCode.UNAVAILABLE,
                "no Checkpoints service is configured for this trainer (--checkpoints)",
            )
        return self.store


def _fb_output(result: ForwardResult) -> common_pb2.ForwardBackwardOutput:
    return common_pb2.ForwardBackwardOutput(
        loss_fn_output_type=result.loss_fn,
        loss_fn_outputs=[
            common_pb2.LossFnOutput(
                outputs={
                    "logprobs": tensors.encode(lp),
                    "elementwise_loss": tensors.encode(loss),
                }
            )
            for lp, loss in zip(result.logprobs, result.elementwise_loss, strict=True)
        ],
        metrics=result.metrics,
    )


def _op_result(op: trainer_pb2.PlannedOp, wave: int, outcome: Any) -> trainer_pb2.OpResult:
    kind = op.WhichOneof("op") or "none"
    result = trainer_pb2.OpResult(op_id=op.op_id, wave=wave)
    if isinstance(outcome, OpError):
        result.error.CopyFrom(error_detail(outcome.code, outcome.message, outcome.field))
        metrics.OPS.labels(kind, outcome.code.name).inc()
        return result
    if isinstance(outcome, ForwardResult):
        outcome = _fb_output(outcome)
    getattr(result, kind).CopyFrom(outcome)
    metrics.OPS.labels(kind, "OK").inc()
    return result
