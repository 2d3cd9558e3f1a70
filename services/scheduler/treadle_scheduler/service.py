"""The public `Treadle` service: its wiring, sessions' lifetimes, and model creation.

A Submit on the Session stream becomes a `Request` on its model (seq_id order, idempotent), is
queued on the trainer holding the model's adapter, runs in that trainer's next cycle, and its
OpResult goes back to the session as a Result or Error. Sampling requests go straight to a
sampler. Checkpoint admin calls are proxied to the checkpoints service with the caller's tenant.

Key decision: `TreadleService` holds the shared state (sessions, models, trainer and sampler
links) and the stream itself; what a session's messages do lives in session_stream.py
(`SessionRequests`, over the same model table) and the checkpoint admin handlers in
checkpoint_admin.py (a mixin, so gRPC dispatches to them directly).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
from prometheus_client import Gauge

from treadle.contract.transport import channel_options
from treadle.v1 import (
    checkpoints_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    trainer_pb2,
)
from treadle_runtime.auth import ApiKeys
from treadle_runtime.errors import OpError, error_detail, invalid, rpc, status_code
from treadle_scheduler.checkpoint_admin import CheckpointAdmin
from treadle_scheduler.config import SchedulerConfig
from treadle_scheduler.models import ModelRecord, owned_model
from treadle_scheduler.quotas import Limits, Quotas
from treadle_scheduler.sampling import SamplerPool
from treadle_scheduler.session_stream import SessionRequests
from treadle_scheduler.sessions import Session as ClientSession
from treadle_scheduler.sessions import SessionTable
from treadle_scheduler.trainers import TrainerLink
from treadle_scheduler.validation import check_path

log = logging.getLogger(__name__)

SESSIONS = Gauge("treadle_scheduler_sessions", "Live sessions")


class TreadleService(CheckpointAdmin, scheduler_pb2_grpc.TreadleServicer):
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
        # the services' message limit and keepalive: a silent trainer or sampler is lost
        self.peer_options = peers = channel_options(
            config.peer_keepalive_seconds, max_message_bytes=config.max_message_bytes
        )
        self.trainers = [
            TrainerLink(
                address,
                token_budget=config.cycle_token_budget,
                min_cycle_seconds=config.min_cycle_seconds,
                retry_seconds=config.trainer_retry_seconds,
                on_lost=self._trainer_lost,
                channel_options=peers,
            )
            for address in config.addresses("trainers")
        ]
        self.samplers = SamplerPool(config.addresses("samplers"), channel_options=peers)
        self._checkpoints_channel: grpc.aio.Channel | None = None
        self.checkpoints: checkpoints_pb2_grpc.CheckpointsAsyncStub | None = None
        self.requests = SessionRequests(
            config, self.quotas, self.models, self.samplers, release=self._release
        )
        self._creating: dict[str, asyncio.Future[scheduler_pb2.CreateModelResponse]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect to peers and start the background loops."""
        if self.config.checkpoints:
            self._checkpoints_channel = grpc.aio.insecure_channel(
                self.config.checkpoints, self.peer_options
            )
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
            if model is not None and not model.lost:
                model.trainer.release(model)
        self.sessions.remove(session)

    # ----------------------------------------------------------------- capabilities
    def _specs(self) -> dict[str, common_pb2.ModelCapability]:
        return {link.spec.name: link.spec for link in self.trainers if link.spec and link.up}

    async def GetCapabilities(
        self, request: scheduler_pb2.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.Capabilities:
        """The models the connected trainers serve, each with the losses its trainers run, and
        those losses together."""
        specs = list(self._specs().values())
        return scheduler_pb2.Capabilities(
            models=specs,
            max_batch_datums=self.config.max_batch_datums,
            loss_fns=list(dict.fromkeys(loss for spec in specs for loss in spec.loss_fns)),
        )

    # ----------------------------------------------------------------- models
    def _place(self, base_model: str) -> TrainerLink:
        links = [link for link in self.trainers if link.up and link.base_model == base_model]
        if not links:
            served = sorted(self._specs())
            if any(link.base_model == base_model for link in self.trainers):
                raise OpError(
                    grpc.StatusCode.UNAVAILABLE, f"no trainer for {base_model!r} is up right now"
                )
            raise invalid("base_model", f"unknown base model {base_model!r}; served: {served}")
        return min(links, key=TrainerLink.load)

    @rpc()
    async def CreateModel(
        self, request: scheduler_pb2.CreateModelRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.CreateModelResponse:
        return await self._create_model(self.keys.tenant(context), request)

    async def _create_model(
        self, tenant: str, request: scheduler_pb2.CreateModelRequest
    ) -> scheduler_pb2.CreateModelResponse:
        """Create the model, or answer a retry of a numbered creation with the same model."""
        session = self.sessions.get(tenant, request.session_id)
        if session is None:
            raise OpError(
                grpc.StatusCode.NOT_FOUND,
                f"session_id: unknown session {request.session_id!r}",
                "session_id",
            )
        if not request.HasField("model_seq_id"):
            return await self._new_model(tenant, session, session.next_model_id(), request)
        if request.model_seq_id < 0:
            raise invalid("model_seq_id", f"must be >= 0, got {request.model_seq_id}")
        model_id = session.numbered_model_id(request.model_seq_id)
        creating = self._creating.get(model_id)
        if creating is None:
            existing = self.models.get(model_id)
            if existing is not None:
                return scheduler_pb2.CreateModelResponse(
                    model_id=model_id, info=self._info(existing)
                )
            creating = asyncio.ensure_future(self._new_model(tenant, session, model_id, request))
            self._creating[model_id] = creating
            creating.add_done_callback(lambda _: self._creating.pop(model_id, None))
        return await asyncio.shield(creating)  # a retry waits for the same creation

    async def _new_model(
        self,
        tenant: str,
        session: ClientSession,
        model_id: str,
        request: scheduler_pb2.CreateModelRequest,
    ) -> scheduler_pb2.CreateModelResponse:
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
        model = ModelRecord(model_id, tenant, session.session_id, base_model, lora, link)
        create = trainer_pb2.CreateAdapterOp(
            tenant=tenant,
            base_model=base_model,
            lora_config=lora,
            seed=request.seed,
            from_state_path=request.from_state_path,
            load_optimizer=request.load_optimizer,
        )
        result = await link.create(model, create)
        if result.WhichOneof("result") == "error":
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
            tokenizer_path=spec.tokenizer_path if spec else "",
            step=model.step,
            is_lora=True,
        )

    @rpc()
    async def GetInfo(
        self, request: scheduler_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.ModelInfo:
        tenant = self.keys.tenant(context)
        return self._info(owned_model(self.models, tenant, request.model_id))

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
        reader = asyncio.create_task(self.requests.read(session, request_iterator))
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
