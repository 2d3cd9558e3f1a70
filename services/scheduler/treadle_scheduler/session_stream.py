"""What a session's client messages do: a Submit becomes queued work, its outcome a reply.

A training Submit is checked against its tenant's models, validated, turned into a `PlannedOp`,
admitted in its model's seq_id order (models.py) and queued on the trainer holding the model's
adapter; its Result or Error is sent from the outcome's done callback, so routing a result costs
no task. Sample and compute_logprobs skip the cycle and go straight to a sampler, each in a task
of its own.

Key decisions: a refused training op still takes its seq_id, so the model's later requests are
not held waiting for it; a repeated request (same model and seq_id) reserves quota and is billed
only once, by the submission that owns it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from prometheus_client import Counter

from treadle.paths import parse_path
from treadle.v1 import scheduler_pb2, trainer_pb2
from treadle_runtime.errors import OpError, as_op_error, error_detail, invalid
from treadle_scheduler.config import SchedulerConfig
from treadle_scheduler.models import ModelRecord, Request, op_tokens, owned_model, submit_digest
from treadle_scheduler.quotas import Quotas
from treadle_scheduler.sampling import SamplerPool
from treadle_scheduler.sessions import Session as ClientSession
from treadle_scheduler.validation import check_path, check_training_op

log = logging.getLogger(__name__)

BILLED_TOKENS = Counter(
    "treadle_scheduler_billed_tokens_total",
    "Tokens billed: datum tokens of forward_backward and forward, sampled tokens of sample, "
    "prompt tokens of compute_logprobs; a repeated training request is billed once",
    ["tenant", "op"],
)
REQUESTS = Counter("treadle_scheduler_requests_total", "Requests answered", ["op", "code"])
EPHEMERAL_TTL_SECONDS = 24 * 3600

RESULT_FIELDS = {
    "forward_backward": "forward_backward",
    "optim_step": "optim_step",
    "save_checkpoint": "save_checkpoint",
    "load_state": "load_state",
}


class SessionRequests:
    """Handles the requests of every session, over the scheduler's shared model table."""

    def __init__(
        self,
        config: SchedulerConfig,
        quotas: Quotas,
        models: dict[str, ModelRecord],
        samplers: SamplerPool,
        release: Callable[[ClientSession, str], None],
    ) -> None:
        self.config = config
        self.release = release  # ends a session and releases its models
        self.quotas = quotas
        self.models = models
        self.samplers = samplers
        self._answers: set[asyncio.Task[None]] = set()  # sampling requests in progress
        self._request_counters: dict[tuple[str, str], Counter] = {}
        self._billed_counters: dict[tuple[str, str], Counter] = {}

    async def read(
        self, session: ClientSession, request_iterator: AsyncIterator[scheduler_pb2.ClientMessage]
    ) -> None:
        """Act on a stream's client messages (after its OpenSession) until the client stops."""
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
            elif kind == "close":
                self.release(session, "closed by the client")
                return

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    def _reply_error(self, session: ClientSession, request_id: str, exc: OpError, op: str) -> None:
        REQUESTS.labels(op, exc.code.name).inc()
        session.send(
            scheduler_pb2.ServerMessage(
                error=scheduler_pb2.Error(request_id=request_id, error=exc.to_detail())
            )
        )

    # ----------------------------------------------------------------- training ops
    def _submit(self, session: ClientSession, submit: scheduler_pb2.Submit) -> None:
        """Act on a Submit: sampling goes to a sampler; a training op is checked, admitted in its
        model's seq_id order, queued on the model's trainer, acknowledged, and answered when its
        outcome is known."""
        kind = submit.WhichOneof("op") or "none"
        if kind in ("sample", "compute_logprobs"):
            self._spawn(self._sample(session, submit))
            return
        try:
            model = self._target_model(session, submit)
        except OpError as exc:
            self._reply_error(session, submit.request_id, exc, kind)
            return
        request, owned = self._request(session, model, submit)
        try:
            answer, ready = model.admit(request)
        except OpError as exc:  # the seq_id was used for a different request
            if owned:
                self.quotas.release_tokens(session.tenant, request.tokens)
            self._reply_error(session, submit.request_id, exc, kind)
            return
        ready = [r for r in ready if not r.outcome.done()]  # refused ones only hold their place
        if ready:
            position, expected = model.trainer.enqueue(ready)
        else:
            position, expected = model.trainer.queued(), 0
        if not answer.outcome.done():
            accepted = scheduler_pb2.Accepted(
                request_id=submit.request_id, queue_position=position, expected_cycle=expected
            )
            session.send(scheduler_pb2.ServerMessage(accepted=accepted))
        answer.outcome.add_done_callback(
            functools.partial(self._answer, session, submit.request_id, model, answer, kind, owned)
        )

    def _target_model(self, session: ClientSession, submit: scheduler_pb2.Submit) -> ModelRecord:
        """The tenant's live model a training Submit is for (OpError otherwise)."""
        model = owned_model(self.models, session.tenant, submit.model_id)
        if model.lost:
            raise OpError(grpc.StatusCode.UNAVAILABLE, model.lost)
        if submit.seq_id < 1:
            raise invalid("seq_id", f"must be >= 1, got {submit.seq_id}")
        return model

    def _request(
        self, session: ClientSession, model: ModelRecord, submit: scheduler_pb2.Submit
    ) -> tuple[Request, bool]:
        """The Request a training Submit becomes, and whether this submission owns it (a retry
        of a known seq_id does not: the original answers it, and holds its quota).

        The op is checked at the door (validation.py) and its tokens reserved against the
        tenant's quota; a refused op is answered with its error at once but still takes its
        seq_id, so that the model's later requests are not held waiting for it."""
        owned = not model.is_known(submit.seq_id)
        outcome: asyncio.Future[trainer_pb2.OpResult] = asyncio.get_running_loop().create_future()
        try:
            check_training_op(
                submit,
                self.config.max_batch_datums,
                self.config.max_request_tokens,
                model.trainer.loss_fns(),
            )
            op = self._planned_op(model, submit)
            tokens = op_tokens(op)
            if owned:
                self.quotas.reserve_tokens(session.tenant, tokens)
        except Exception as exc:  # a contract check's ValidationError, or an OpError
            op = trainer_pb2.PlannedOp(
                op_id=f"{model.model_id}#{submit.seq_id}", model_id=model.model_id
            )
            tokens = 0
            if owned:
                error = as_op_error(exc, "admission")
                outcome.set_result(trainer_pb2.OpResult(op_id=op.op_id, error=error.to_detail()))
        request = Request(
            model_id=model.model_id,
            seq_id=submit.seq_id,
            op=op,
            outcome=outcome,
            tenant=session.tenant,
            digest=submit_digest(submit),
            tokens=tokens,
        )
        return request, owned

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

    # ----------------------------------------------------------------- sampling ops
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
        except Exception as exc:
            self._reply_error(session, submit.request_id, as_op_error(exc, kind), kind)
            return
        REQUESTS.labels(kind, "OK").inc()
        session.send(scheduler_pb2.ServerMessage(result=reply))
