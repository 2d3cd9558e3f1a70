"""The public `Treadle` service: sessions, model creation, ordering, and checkpoint admin.

A Submit on the Session stream becomes a `Request` on its model (seq_id order, idempotent), is
queued on the trainer holding the model's adapter, runs in that trainer's next cycle, and its
OpResult goes back to the session as a Result or Error. Sampling requests go straight to a
sampler. Checkpoint admin calls are proxied to the checkpoints service with the caller's tenant.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
from prometheus_client import Counter, Gauge

from treadle.paths import parse_path
from treadle.v1 import (
    checkpoints_pb2,
    checkpoints_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    trainer_pb2,
)
from treadle_runtime.auth import ApiKeys
from treadle_runtime.errors import OpError, error_detail, invalid, status_code
from treadle_runtime.server import keepalive_options
from treadle_scheduler.config import SchedulerConfig
from treadle_scheduler.models import ModelRecord, Request, op_tokens, submit_digest
from treadle_scheduler.quotas import Limits, Quotas
from treadle_scheduler.sampling import SamplerPool
from treadle_scheduler.sessions import Session as ClientSession
from treadle_scheduler.sessions import SessionTable
from treadle_scheduler.trainers import TrainerLink
from treadle_scheduler.validation import LOSS_FNS, check_path, check_training_op

log = logging.getLogger(__name__)

BILLED_TOKENS = Counter(
    "treadle_scheduler_billed_tokens_total",
    "Tokens billed: datum tokens of forward_backward and forward, sampled tokens of sample, "
    "prompt tokens of compute_logprobs; a repeated training request is billed once",
    ["tenant", "op"],
)
REQUESTS = Counter("treadle_scheduler_requests_total", "Requests answered", ["op", "code"])
SESSIONS = Gauge("treadle_scheduler_sessions", "Live sessions")
EPHEMERAL_TTL_SECONDS = 24 * 3600

RESULT_FIELDS = {
    "forward_backward": "forward_backward",
    "optim_step": "optim_step",
    "save_checkpoint": "save_checkpoint",
    "load_state": "load_state",
}


def _abort_code(exc: OpError) -> tuple[grpc.StatusCode, str]:
    return exc.code, exc.message


class TreadleService(scheduler_pb2_grpc.TreadleServicer):
    """Servicer of the public API."""

    def __init__(
        self, config: SchedulerConfig, keys: ApiKeys, quotas: Quotas | None = None
    ) -> None:
        self.config = config
        self.keys = keys
        self.quotas = quotas or Quotas(
            Limits(config.quota_max_models, config.quota_max_queued_tokens)
        )
        self.sessions = SessionTable(config.session_idle_seconds)
        self.models: dict[str, ModelRecord] = {}
        self.trainers = [
            TrainerLink(
                address,
                token_budget=config.cycle_token_budget,
                min_cycle_seconds=config.min_cycle_seconds,
                retry_seconds=config.trainer_retry_seconds,
                on_lost=self._trainer_lost,
                channel_options=keepalive_options(config.peer_keepalive_seconds),
            )
            for address in config.addresses("trainers")
        ]
        self.samplers = SamplerPool(
            config.addresses("samplers"),
            channel_options=keepalive_options(config.peer_keepalive_seconds),
        )
        self._checkpoints_channel: grpc.aio.Channel | None = None
        self.checkpoints: checkpoints_pb2_grpc.CheckpointsAsyncStub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._answers: set[asyncio.Task[None]] = set()  # sampling requests in progress
        self._request_counters: dict[tuple[str, str], Counter] = {}
        self._billed_counters: dict[tuple[str, str], Counter] = {}

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect to peers and start the background loops."""
        if self.config.checkpoints:
            self._checkpoints_channel = grpc.aio.insecure_channel(self.config.checkpoints)
            self.checkpoints = checkpoints_pb2_grpc.CheckpointsStub(self._checkpoints_channel)
        for link in self.trainers:
            link.start()
        await self.samplers.refresh()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self._tasks.append(asyncio.create_task(self._find_samplers(), name="samplers"))

    async def stop(self) -> None:
        """Stop loops and close channels."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(link.stop() for link in self.trainers))
        await self.samplers.close()
        if self._checkpoints_channel is not None:
            await self._checkpoints_channel.close(None)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    def _trainer_lost(self, link: TrainerLink) -> None:
        log.warning("models lost with trainer", extra={"trainer": link.address})

    async def _housekeeping(self) -> None:
        """Release idle sessions and fail requests held too long for a missing seq_id."""
        period = max(0.05, min(1.0, self.config.session_idle_seconds / 4))
        while True:
            await asyncio.sleep(period)
            for session in self.sessions.idle():
                self._release(session, "session idle timeout: no message or heartbeat received")
            cutoff = time.monotonic() - self.config.hold_timeout_seconds
            for model in self.models.values():
                for request in model.expire_held(cutoff):
                    message = (
                        f"seq_id: request {request.seq_id} waited "
                        f"{self.config.hold_timeout_seconds:.0f}s for seq_id {model.next_seq}, "
                        "which never arrived"
                    )
                    request.outcome.set_result(
                        trainer_pb2.OpResult(
                            op_id=request.op.op_id,
                            error=error_detail(
                                grpc.StatusCode.DEADLINE_EXCEEDED, message, "seq_id"
                            ),
                        )
                    )
            SESSIONS.set(len(self.sessions))

    async def _find_samplers(self) -> None:
        """Resolve sampler names again now and then: replicas come and go."""
        while True:
            await asyncio.sleep(self.config.sampler_refresh_seconds)
            await self.samplers.refresh()

    def _release(self, session: ClientSession, reason: str) -> None:
        """Release a session and its models' adapters."""
        log.info("releasing session", extra={"session": session.session_id, "reason": reason})
        session.send(
            scheduler_pb2.ServerMessage(
                error=scheduler_pb2.Error(
                    error=error_detail(grpc.StatusCode.ABORTED, f"session released: {reason}")
                )
            )
        )
        for model_id in list(session.model_ids):
            model = self.models.pop(model_id, None)
            if model is None or model.lost:
                continue
            op = trainer_pb2.PlannedOp(
                op_id=f"{model_id}#release",
                model_id=model_id,
                release_adapter=trainer_pb2.ReleaseAdapterOp(),
            )
            future: asyncio.Future[trainer_pb2.OpResult] = (
                asyncio.get_running_loop().create_future()
            )
            model.trainer.enqueue([Request(model_id, -1, op, b"", 0, future, model.tenant)])
            model.trainer.models.pop(model_id, None)
        self.sessions.remove(session)

    # ----------------------------------------------------------------- capabilities
    def _specs(self) -> dict[str, common_pb2.ModelCapability]:
        return {link.spec.name: link.spec for link in self.trainers if link.spec and link.up}

    async def GetCapabilities(
        self, request: scheduler_pb2.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.Capabilities:
        return scheduler_pb2.Capabilities(
            models=list(self._specs().values()),
            max_batch_datums=self.config.max_batch_datums,
            loss_fns=list(LOSS_FNS),
        )

    # ----------------------------------------------------------------- models
    def _model(self, tenant: str, model_id: str) -> ModelRecord:
        model = self.models.get(model_id)
        if model is None or model.tenant != tenant:
            raise OpError(
                grpc.StatusCode.NOT_FOUND, f"model_id: unknown model {model_id!r}", "model_id"
            )
        return model

    def _place(self, base_model: str) -> TrainerLink:
        links = [link for link in self.trainers if link.up and link.base_model == base_model]
        if not links:
            served = sorted(self._specs())
            if any(link.base_model == base_model for link in self.trainers):
                raise OpError(
                    grpc.StatusCode.UNAVAILABLE, f"no trainer for {base_model!r} is up right now"
                )
            raise invalid("base_model", f"unknown base model {base_model!r}; served: {served}")
        return min(links, key=lambda link: (len(link.models), link.queued()))

    async def _checkpoint_info(self, tenant: str, path: str) -> common_pb2.CheckpointInfo:
        """Metadata of a tenant's checkpoint (NOT_FOUND when it is not the tenant's)."""
        parsed = parse_path(path)
        if self.checkpoints is None:
            raise OpError(grpc.StatusCode.UNAVAILABLE, "no checkpoints service is configured")
        token = ""
        while True:
            page = await self.checkpoints.List(
                checkpoints_pb2.ListCheckpointsRequest(
                    tenant=tenant, run_id=parsed.run_id, page_size=500, page_token=token
                )
            )
            for info in page.checkpoints:
                if info.path == str(parsed):
                    return info
            token = page.next_page_token
            if not token:
                raise OpError(grpc.StatusCode.NOT_FOUND, f"path: no checkpoint {path!r}", "path")

    async def CreateModel(
        self, request: scheduler_pb2.CreateModelRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.CreateModelResponse:
        tenant = self.keys.tenant(context)
        try:
            return await self._create_model(tenant, request)
        except OpError as exc:
            await context.abort(*_abort_code(exc))
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        raise AssertionError("unreachable")

    async def _create_model(
        self, tenant: str, request: scheduler_pb2.CreateModelRequest
    ) -> scheduler_pb2.CreateModelResponse:
        session = self.sessions.get(tenant, request.session_id)
        if session is None:
            raise OpError(
                grpc.StatusCode.NOT_FOUND,
                f"session_id: unknown session {request.session_id!r}",
                "session_id",
            )
        live = sum(1 for m in self.models.values() if m.tenant == tenant)
        self.quotas.check_models(tenant, live)
        base_model, lora = request.base_model, request.lora_config
        if request.from_state_path:
            check_path("from_state_path", request.from_state_path, kind="state")
            info = await self._checkpoint_info(tenant, request.from_state_path)
            base_model, lora = info.base_model, info.lora_config
        elif not base_model:
            raise invalid("base_model", "is required")
        link = self._place(base_model)
        model_id = session.next_model_id()
        model = ModelRecord(model_id, tenant, session.session_id, base_model, lora, link)
        op = trainer_pb2.PlannedOp(
            op_id=f"{model_id}#create",
            model_id=model_id,
            create_adapter=trainer_pb2.CreateAdapterOp(
                tenant=tenant,
                base_model=base_model,
                lora_config=lora,
                seed=request.seed,
                from_state_path=request.from_state_path,
                load_optimizer=request.load_optimizer,
            ),
        )
        future: asyncio.Future[trainer_pb2.OpResult] = asyncio.get_running_loop().create_future()
        link.models[model_id] = model
        link.enqueue([Request(model_id, 0, op, b"", 0, future, tenant)])
        result = await future
        if result.WhichOneof("result") == "error":
            link.models.pop(model_id, None)
            raise OpError(status_code(result.error.code), result.error.message, result.error.field)
        model.step = result.create_adapter.step
        self.models[model_id] = model
        session.model_ids.add(model_id)
        log.info("model created", extra={"model": model_id, "tenant": tenant, "base": base_model})
        return scheduler_pb2.CreateModelResponse(model_id=model_id, info=self._info(model))

    def _info(self, model: ModelRecord) -> scheduler_pb2.ModelInfo:
        spec = model.trainer.spec
        return scheduler_pb2.ModelInfo(
            model_id=model.model_id,
            base_model=model.base_model,
            lora_config=model.lora_config,
            architecture=spec.architecture if spec else "",
            tokenizer_id=spec.tokenizer_id if spec else "",
            step=model.step,
            is_lora=True,
        )

    async def GetInfo(
        self, request: scheduler_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.ModelInfo:
        tenant = self.keys.tenant(context)
        try:
            return self._info(self._model(tenant, request.model_id))
        except OpError as exc:
            await context.abort(*_abort_code(exc))
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- the session stream
    async def Session(
        self,
        request_iterator: AsyncIterator[scheduler_pb2.ClientMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[scheduler_pb2.ServerMessage]:
        tenant = self.keys.tenant(context)
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "open":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "open: the first message must be OpenSession"
            )
        session, resumed = self.sessions.open(tenant, first.open.session_id)
        session.streams += 1
        detached = session.attach()  # from now on the older stream delivers nothing
        yield scheduler_pb2.ServerMessage(
            opened=scheduler_pb2.SessionOpened(
                session_id=session.session_id,
                resumed=resumed,
                idle_timeout_seconds=self.config.session_idle_seconds,
            )
        )
        reader = asyncio.create_task(self._read(session, request_iterator))
        replaced = asyncio.ensure_future(detached.wait())
        getter: asyncio.Future[scheduler_pb2.ServerMessage | None] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(session.outbox.get())
                await asyncio.wait({getter, reader, replaced}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    break  # the client closed its side, or a newer stream took over
                message = getter.result()
                getter = None
                if detached.is_set():  # taken just as a newer stream attached: pass it on
                    session.outbox.put_nowait(message)
                    break
                if message is None:
                    break  # session released
                yield message
        finally:
            session.streams -= 1
            reader.cancel()
            replaced.cancel()
            if getter is not None:
                getter.cancel()
        if detached.is_set():  # a client still listening here reconnects, as after any loss
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "session: resumed on a newer stream; this stream is closed",
            )

    async def _read(
        self, session: ClientSession, request_iterator: AsyncIterator[scheduler_pb2.ClientMessage]
    ) -> None:
        async for message in request_iterator:
            session.touch()
            kind = message.WhichOneof("kind")
            if kind == "submit":
                self._submit(session, message.submit)
            elif kind == "heartbeat":
                session.send(
                    scheduler_pb2.ServerMessage(
                        heartbeat_ack=scheduler_pb2.HeartbeatAck(server_time=time.time())
                    )
                )
            elif kind == "cancel":
                self._cancel(session, message.cancel.request_id)

    def _reply_error(self, session: ClientSession, request_id: str, exc: OpError, op: str) -> None:
        REQUESTS.labels(op, exc.code.name).inc()
        session.send(
            scheduler_pb2.ServerMessage(
                error=scheduler_pb2.Error(request_id=request_id, error=exc.to_detail())
            )
        )

    def _submit(self, session: ClientSession, submit: scheduler_pb2.Submit) -> None:
        """Queue a training op in its model's order; a refused op still takes its seq_id, so the
        model's later requests are not held waiting for it."""
        kind = submit.WhichOneof("op") or "none"
        try:
            if kind in ("sample", "compute_logprobs"):
                self._spawn(self._sample(session, submit))
                return
            model = self._model(session.tenant, submit.model_id)
            if model.lost:
                raise OpError(grpc.StatusCode.UNAVAILABLE, model.lost)
            if submit.seq_id < 1:
                raise invalid("seq_id", f"must be >= 1, got {submit.seq_id}")
        except OpError as exc:
            self._reply_error(session, submit.request_id, exc, kind)
            return
        retry = model.is_known(submit.seq_id)
        refusal: OpError | None = None
        op = trainer_pb2.PlannedOp(
            op_id=f"{model.model_id}#{submit.seq_id}", model_id=model.model_id
        )
        try:
            check_training_op(submit, self.config.max_batch_datums, self.config.max_request_tokens)
            op = self._planned_op(model, submit)
            if not retry:
                self.quotas.reserve_tokens(session.tenant, op_tokens(op))
        except OpError as exc:
            refusal = exc
        future: asyncio.Future[trainer_pb2.OpResult] = asyncio.get_running_loop().create_future()
        tokens = 0 if refusal else op_tokens(op)
        request = Request(
            model.model_id, submit.seq_id, op, submit_digest(submit), tokens, future, session.tenant
        )
        if refusal is not None and not retry:
            future.set_result(trainer_pb2.OpResult(op_id=op.op_id, error=refusal.to_detail()))
        try:
            answer, ready = model.admit(request)
        except OpError as exc:
            if not retry:
                self.quotas.release_tokens(session.tenant, tokens)
            self._reply_error(session, submit.request_id, exc, kind)
            return
        ready = [r for r in ready if not r.outcome.done()]  # refused ones only hold their place
        if ready:
            position, expected = model.trainer.enqueue(ready)
        else:
            position, expected = model.trainer.queued(), 0
        if not answer.outcome.done():
            session.send(
                scheduler_pb2.ServerMessage(
                    accepted=scheduler_pb2.Accepted(
                        request_id=submit.request_id,
                        queue_position=position,
                        expected_cycle=expected,
                    )
                )
            )
        answer.outcome.add_done_callback(
            functools.partial(
                self._answer, session, submit.request_id, model, answer, kind, not retry
            )
        )

    def _planned_op(
        self, model: ModelRecord, submit: scheduler_pb2.Submit
    ) -> trainer_pb2.PlannedOp:
        op = trainer_pb2.PlannedOp(
            op_id=f"{model.model_id}#{submit.seq_id}", model_id=model.model_id
        )
        kind = submit.WhichOneof("op")
        if kind == "forward_backward":
            op.forward_backward.CopyFrom(submit.forward_backward)
        elif kind == "optim_step":
            op.optim_step.CopyFrom(submit.optim_step)
        elif kind == "save_checkpoint":
            save = op.save_checkpoint
            save.CopyFrom(submit.save_checkpoint)
            if save.ephemeral:
                save.name = save.name or f"ephemeral-{uuid.uuid4().hex[:12]}"
                if not save.HasField("ttl_seconds"):
                    save.ttl_seconds = EPHEMERAL_TTL_SECONDS
        elif kind == "load_state":
            op.load_state.CopyFrom(submit.load_state)
        return op

    def _answer(
        self,
        session: ClientSession,
        request_id: str,
        model: ModelRecord,
        request: Request,
        kind: str,
        owned: bool,
        outcome: asyncio.Future[trainer_pb2.OpResult],
    ) -> None:
        """Send a finished request's result (or error) to its session; runs as the outcome's
        done callback, so routing a result costs no task."""
        result = outcome.result()
        if owned:
            self.quotas.release_tokens(request.tenant, request.tokens)
        which = result.WhichOneof("result")
        if which == "error" or which is None:
            detail = result.error if which else error_detail(grpc.StatusCode.INTERNAL, "empty")
            self._counted(kind, detail.code).inc()
            session.send(
                scheduler_pb2.ServerMessage(
                    error=scheduler_pb2.Error(request_id=request_id, error=detail)
                )
            )
            return
        self._counted(kind, "OK").inc()
        reply = scheduler_pb2.Result(request_id=request_id, cycle=request.cycle, wave=result.wave)
        getattr(reply, RESULT_FIELDS[which]).CopyFrom(getattr(result, which))
        if which == "optim_step":
            model.step = int(result.optim_step.metrics.get("step:max", model.step + 1))
        elif which == "load_state":
            model.step = result.load_state.step
        elif which == "forward_backward" and owned:  # a repeated request is billed once
            forward_only = request.op.forward_backward.forward_only
            self._billed(session.tenant, "forward" if forward_only else kind).inc(request.tokens)
        session.send(scheduler_pb2.ServerMessage(result=reply))

    def _counted(self, op: str, code: str) -> Counter:
        """REQUESTS' child for (op, code), looked up once."""
        child = self._request_counters.get((op, code))
        if child is None:
            child = self._request_counters[op, code] = REQUESTS.labels(op, code)
        return child

    def _billed(self, tenant: str, op: str) -> Counter:
        """BILLED_TOKENS' child for (tenant, op), looked up once."""
        child = self._billed_counters.get((tenant, op))
        if child is None:
            child = self._billed_counters[tenant, op] = BILLED_TOKENS.labels(tenant, op)
        return child

    def _cancel(self, session: ClientSession, request_id: str) -> None:
        """Cancellation of queued work is answered once the request would have run."""
        log.info("cancel requested", extra={"session": session.session_id, "request": request_id})

    # ----------------------------------------------------------------- sampling
    def _sampling_base_model(self, tenant: str, path: str, base_model: str) -> str:
        if path:
            check_path("model_path", path, kind="sampler")
            model = self.models.get(parse_path(path).run_id)
            if model is not None and model.tenant == tenant:
                return model.base_model
        if base_model:
            return base_model
        served = self.samplers.base_models()
        if len(served) == 1:
            return next(iter(served))
        raise invalid("base_model", "is required to route this request")

    async def _sample(self, session: ClientSession, submit: scheduler_pb2.Submit) -> None:
        kind = submit.WhichOneof("op") or ""
        try:
            if kind == "sample":
                request = submit.sample
                base = self._sampling_base_model(
                    session.tenant, request.model_path, request.base_model
                )
                response = await self.samplers.sample(session.tenant, base, request)
                reply = scheduler_pb2.Result(request_id=submit.request_id, sample=response)
                self._billed(session.tenant, kind).inc(
                    sum(len(s.tokens) for s in response.sequences)
                )
            else:
                lp_request = submit.compute_logprobs
                base = self._sampling_base_model(
                    session.tenant, lp_request.model_path, lp_request.base_model
                )
                lp = await self.samplers.compute_logprobs(session.tenant, base, lp_request)
                reply = scheduler_pb2.Result(request_id=submit.request_id, compute_logprobs=lp)
                self._billed(session.tenant, kind).inc(len(lp.logprobs) + 1)  # the whole prompt
        except OpError as exc:
            self._reply_error(session, submit.request_id, exc, kind)
            return
        REQUESTS.labels(kind, "OK").inc()
        session.send(scheduler_pb2.ServerMessage(result=reply))

    # ----------------------------------------------------------------- checkpoint admin
    async def _proxy(self, context: grpc.aio.ServicerContext, call: object) -> object:
        try:
            return await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")

    def _require_checkpoints(self) -> checkpoints_pb2_grpc.CheckpointsAsyncStub:
        if self.checkpoints is None:
            raise OpError(grpc.StatusCode.UNAVAILABLE, "no checkpoints service is configured")
        return self.checkpoints

    async def ListCheckpoints(
        self, request: checkpoints_pb2.ListCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> checkpoints_pb2.ListCheckpointsResponse:
        request.tenant = self.keys.tenant(context)
        response = await self._proxy(context, self._require_checkpoints().List(request))
        assert isinstance(response, checkpoints_pb2.ListCheckpointsResponse)
        for info in response.checkpoints:
            info.tenant = ""
        return response

    async def DeleteCheckpoints(
        self, request: checkpoints_pb2.DeleteCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> checkpoints_pb2.DeleteCheckpointsResponse:
        request.tenant = self.keys.tenant(context)
        response = await self._proxy(context, self._require_checkpoints().Delete(request))
        assert isinstance(response, checkpoints_pb2.DeleteCheckpointsResponse)
        return response

    async def SetCheckpointTtl(
        self, request: checkpoints_pb2.SetTtlRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.CheckpointInfo:
        request.tenant = self.keys.tenant(context)
        response = await self._proxy(context, self._require_checkpoints().SetTtl(request))
        assert isinstance(response, common_pb2.CheckpointInfo)
        response.tenant = ""
        return response

    async def DownloadCheckpoint(
        self, request: checkpoints_pb2.ExportCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[checkpoints_pb2.DataChunk]:
        request.tenant = self.keys.tenant(context)
        try:
            async for chunk in self._require_checkpoints().Export(request):
                yield chunk
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
