"""One link per trainer: its cycle loop, from queued requests to a CyclePlan and back.

Cycles are work-conserving: a cycle starts as soon as the previous one has ended and work is
queued (or after `min_cycle_seconds`, if set). "Ended" means computed: once the first result of
a cycle's last wave arrives the trainer has nothing left to run, so the next plan goes out while
that wave's results are still streaming in (each gRPC message costs a round trip, and a wave's
worth of them would otherwise leave the trainer idle). A cycle takes queued requests up to the
token budget, shared between tenants by deficit round robin (fairness.py); requests of one model
keep their seq_id order and form the waves of the plan on the trainer. Results are handed back op
by op as the trainer streams them.

Overhead per cycle is the time from the moment it could have started (the previous CycleDone, or
work arriving at an empty queue, whichever is later) to its own CycleDone, minus the trainer's
busy time, floored at zero; summed over a run it is the wall time the trainer was not executing
plans while work waited. A cycle's duration likewise runs from the later of its plan being sent
and the previous CycleDone, so a plan sent early does not count the cycle it waited behind.

A trainer that disappears fails its in-flight and queued requests with UNAVAILABLE, and its
models are marked lost; the link reconnects and the trainer takes new models when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from prometheus_client import Counter, Gauge, Histogram

from treadle.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from treadle_runtime.errors import error_detail
from treadle_runtime.wire_bytes import plan_command
from treadle_scheduler.fairness import FairQueue
from treadle_scheduler.models import ModelRecord, Request

log = logging.getLogger(__name__)

CYCLES = Counter("treadle_scheduler_cycles_total", "Cycles run", ["base_model"])
CYCLE_SECONDS = Histogram(
    "treadle_scheduler_cycle_duration_seconds", "Wall time of a cycle", ["base_model"]
)
CYCLE_OPS = Histogram(
    "treadle_scheduler_cycle_ops", "Ops per cycle", ["base_model"], buckets=(1, 2, 4, 8, 16, 64)
)
CYCLE_TOKENS = Histogram(
    "treadle_scheduler_cycle_tokens",
    "Tokens per cycle",
    ["base_model"],
    buckets=(64, 256, 1024, 4096, 16384, 65536),
)
BUSY_SECONDS = Counter(
    "treadle_scheduler_trainer_busy_seconds_total", "Seconds trainers spent in cycles", ["trainer"]
)
UTILIZATION = Gauge(
    "treadle_scheduler_cycle_utilization",
    "Busy fraction of wall time over the last minute (trainer time in cycles / wall time)",
    ["trainer"],
)
CYCLE_TENANTS = Histogram(
    "treadle_scheduler_cycle_tenants",
    "Tenants per cycle",
    ["base_model"],
    buckets=(1, 2, 4, 8, 16, 32),
)
OVERHEAD_SECONDS = Histogram(
    "treadle_scheduler_cycle_overhead_seconds",
    "Time the trainer sat idle while this cycle's work waited: from the later of the previous "
    "CycleDone and work arriving at an idle link, to this CycleDone, minus the trainer's busy time",
    ["base_model"],
    buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1),
)
QUEUE_DEPTH = Gauge("treadle_scheduler_queue_depth", "Requests queued", ["base_model"])
QUEUE_WAIT = Histogram("treadle_scheduler_queue_wait_seconds", "Submit to cycle start")
TRAINER_UP = Gauge("treadle_scheduler_trainer_up", "1 while a trainer is connected", ["trainer"])

RUN_CYCLES = "/treadle.v1.Trainer/RunCycles"
LOST_MESSAGE = (
    "trainer {address} became unavailable; model {model_id}'s in-memory state is lost: "
    "resume from your last state checkpoint (create_training_client_from_state_with_optimizer)"
)


class TrainerLink:
    """The scheduler's side of one trainer: placement, queue and the RunCycles stream."""

    def __init__(
        self,
        address: str,
        *,
        token_budget: int,
        min_cycle_seconds: float,
        retry_seconds: float,
        on_lost: Callable[[TrainerLink], None],
        channel_options: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.address = address
        self.channel_options = list(channel_options)  # message limits, keepalive
        self.token_budget = token_budget
        self.min_cycle_seconds = min_cycle_seconds
        self.retry_seconds = retry_seconds
        self.on_lost = on_lost
        self.spec: common_pb2.ModelCapability | None = None
        self.up = False
        self.cycle = 0  # number of the cycle running now or last run
        self.queue = FairQueue()
        self._models: dict[str, ModelRecord] = {}  # placed here: changed by this class alone
        self._busy_window: deque[tuple[float, float]] = deque()  # (cycle end, busy seconds)
        self._connected_at = 0.0
        self._work = asyncio.Event()
        self._work_at = 0.0  # when work last arrived at an empty queue
        self._free_at = 0.0  # when the link last became free to start a cycle
        self._in_flight: dict[str, Request] = {}
        self._sent: deque[_SentCycle] = deque()  # plans sent whose CycleDone is still to come
        self._task: asyncio.Task[None] | None = None
        self._metrics: _LinkMetrics | None = None  # labelled once the base model is known

    @property
    def base_model(self) -> str:
        """Name of the base model this trainer serves ("" until first contact)."""
        return self.spec.name if self.spec else ""

    def loss_fns(self) -> tuple[str, ...]:
        """The losses this trainer runs (its capability; empty until first contact)."""
        return tuple(self.spec.loss_fns) if self.spec else ()

    def start(self) -> None:
        """Start the connect-and-run loop in the background."""
        UTILIZATION.labels(self.address).set_function(self.utilization)
        self._task = asyncio.create_task(self._run_forever(), name=f"trainer {self.address}")

    async def stop(self) -> None:
        """Stop the loop (shutdown)."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def queued(self) -> int:
        """Requests waiting for a cycle."""
        return len(self.queue)

    def load(self) -> tuple[int, int]:
        """(models placed here, requests queued): placement takes the least loaded link."""
        return len(self._models), self.queued()

    # ----------------------------------------------------------------- placement
    async def create(
        self, model: ModelRecord, create: trainer_pb2.CreateAdapterOp
    ) -> trainer_pb2.OpResult:
        """Place `model` here and create its adapter; returns the trainer's result. A model whose
        creation failed is not placed; one whose caller went away while it was being created is
        released as soon as the trainer has made it, so no adapter is left without an owner."""
        self._models[model.model_id] = model
        op = trainer_pb2.PlannedOp(
            op_id=f"{model.model_id}#create", model_id=model.model_id, create_adapter=create
        )
        outcome = self._own_op(model, op)
        try:
            result = await asyncio.shield(outcome)
        except asyncio.CancelledError:
            outcome.add_done_callback(lambda done: self._abandoned(model, done))
            raise
        if result.WhichOneof("result") == "error":
            self.forget(model.model_id)
        return result

    def _abandoned(self, model: ModelRecord, done: asyncio.Future[trainer_pb2.OpResult]) -> None:
        """A creation nobody waits for any more has ended: undo it."""
        if not done.cancelled() and done.result().WhichOneof("result") != "error":
            self.release(model)
        else:
            self.forget(model.model_id)

    def release(self, model: ModelRecord) -> None:
        """Queue the release of `model`'s adapter and stop holding it."""
        op = trainer_pb2.PlannedOp(
            op_id=f"{model.model_id}#release",
            model_id=model.model_id,
            release_adapter=trainer_pb2.ReleaseAdapterOp(),
        )
        self._own_op(model, op)
        self.forget(model.model_id)

    def forget(self, model_id: str) -> None:
        """Stop holding `model_id` (its adapter was never created, or is released)."""
        self._models.pop(model_id, None)

    def _own_op(
        self, model: ModelRecord, op: trainer_pb2.PlannedOp
    ) -> asyncio.Future[trainer_pb2.OpResult]:
        """Queue an op the scheduler makes itself (outside the model's seq_id order)."""
        outcome: asyncio.Future[trainer_pb2.OpResult] = asyncio.get_running_loop().create_future()
        self.enqueue(
            [
                Request(
                    model_id=model.model_id, seq_id=0, op=op, outcome=outcome, tenant=model.tenant
                )
            ]
        )
        return outcome

    def enqueue(self, requests: list[Request]) -> tuple[int, int]:
        """Queue ready requests; returns (queue position of the last, expected cycle)."""
        position = self.queued()
        tokens_ahead = self.queue.tokens()
        if not self.queue:
            self._work_at = time.monotonic()
        for request in requests:
            request.op_bytes = request.op.SerializeToString()
            self.queue.push(request.tenant, request)
        self._report_depth()
        if not self._work.is_set():
            self._work.set()
        # the next cycle to start is cycle + 1; a backlog over the token budget pushes it later
        expected = self.cycle + 1 + tokens_ahead // self.token_budget
        return position + len(requests) - 1, expected

    async def _run_forever(self) -> None:
        while True:
            try:
                await self._connect_and_run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the trainer went away; fail what it held and retry
                if self.up:
                    log.warning("trainer lost", extra={"trainer": self.address, "error": str(exc)})
                self._lose()
            await asyncio.sleep(self.retry_seconds)

    async def _connect_and_run(self) -> None:
        async with grpc.aio.insecure_channel(self.address, self.channel_options) as channel:
            stub: trainer_pb2_grpc.TrainerAsyncStub = trainer_pb2_grpc.TrainerStub(channel)
            info = await stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=10)
            self.spec = info.model
            self._metrics = metrics = _LinkMetrics(self.address, self.base_model)
            # plans go out as bytes assembled from pre-serialized ops (treadle_runtime.wire_bytes)
            call = channel.stream_stream(
                RUN_CYCLES,
                request_serializer=None,
                response_deserializer=trainer_pb2.TrainerEvent.FromString,
            )()  # type: ignore[call-arg]  # used with write()/read()
            self.up = True
            self._connected_at = self._free_at = time.monotonic()
            TRAINER_UP.labels(self.address).set(1)
            log.info("trainer connected", extra={"trainer": self.address, "model": info.model.name})
            while True:
                if not self._sent:
                    if not self._work.is_set():
                        try:
                            await asyncio.wait_for(self._work.wait(), timeout=self.retry_seconds)
                        except asyncio.TimeoutError:  # idle: make sure the trainer is still there
                            await stub.GetTrainerInfo(
                                trainer_pb2.GetTrainerInfoRequest(), timeout=5
                            )
                            continue
                    if not await self._send_plan(call, metrics):
                        self._work.clear()
                    continue
                event = await call.read()
                if not isinstance(event, trainer_pb2.TrainerEvent):  # grpc.aio.EOF
                    raise ConnectionError("trainer closed its cycle stream")
                if event.WhichOneof("event") == "op_result":
                    result = event.op_result
                    answered = self._in_flight.pop(result.op_id, None)
                    if answered is not None and not answered.outcome.done():
                        answered.outcome.set_result(result)
                    if self._trainer_free(result.wave) and self.queue:
                        await self._send_plan(call, metrics)
                else:
                    await self._cycle_done(metrics, event.cycle_done)

    def _report_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self.queued())

    def _trainer_free(self, wave: int) -> bool:
        """Whether the trainer has computed every plan sent: the only one left is streaming the
        results of its last wave (min_cycle_seconds, when set, spaces cycles out instead)."""
        return (
            len(self._sent) == 1 and wave == self._sent[0].waves - 1 and not self.min_cycle_seconds
        )

    async def _send_plan(self, call: grpc.aio.StreamStreamCall, metrics: _LinkMetrics) -> bool:
        """Send the next cycle's plan, taken fairly from the queue; False if nothing is queued.
        Bookkeeping that the plan does not need waits until it is on its way."""
        chosen = self.queue.take(self.token_budget)
        if not chosen:
            return False
        self.cycle += 1
        for request in chosen:
            request.cycle = self.cycle
            self._in_flight[request.op.op_id] = request
        started = time.monotonic()
        sent = _SentCycle(self.cycle, chosen, started, self._work_at)
        self._sent.append(sent)
        await call.write(plan_command(self.cycle, [r.op_bytes for r in chosen]))
        metrics.planned(chosen, started, self.queued())
        return True

    async def _cycle_done(self, metrics: _LinkMetrics, done: trainer_pb2.CycleDone) -> None:
        """Close the oldest cycle sent: fail its unanswered ops, account its time."""
        ended = time.monotonic()
        cycle = self._sent.popleft()
        for request in cycle.requests:  # an op the trainer never answered
            self._in_flight.pop(request.op.op_id, None)
            if not request.outcome.done():
                request.outcome.set_result(_failure(request, grpc.StatusCode.INTERNAL, "no result"))
        ready_at = max(self._free_at, cycle.work_at)
        self._account(metrics, ended, ended - ready_at, done.busy_seconds)
        duration = ended - max(cycle.started, self._free_at)  # not the cycle it waited behind
        metrics.cycle_done(duration, len(cycle.requests), done.tokens)
        self._free_at = ended
        if self.min_cycle_seconds > ended - cycle.started:
            await asyncio.sleep(self.min_cycle_seconds - (ended - cycle.started))
            self._free_at = time.monotonic()

    def _account(self, metrics: _LinkMetrics, ended: float, elapsed: float, busy: float) -> None:
        """Busy time, utilization over the last minute, and time spent outside the trainer:
        `elapsed` runs from the moment this cycle could have started (the previous cycle's
        CycleDone, or work arriving at an idle link) to its own CycleDone."""
        metrics.busy.inc(busy)
        metrics.overhead.observe(max(0.0, elapsed - busy))
        self._busy_window.append((ended, busy))

    def utilization(self) -> float:
        """Trainer time in cycles over wall time, for the last minute (0 while disconnected)."""
        if not self.up:
            return 0.0
        now = time.monotonic()
        while self._busy_window and self._busy_window[0][0] < now - 60.0:
            self._busy_window.popleft()
        window = min(60.0, now - self._connected_at)
        busy = sum(b for _, b in self._busy_window)
        return min(1.0, busy / window) if window > 0 else 0.0

    def _lose(self) -> None:
        """Fail everything the trainer held or was about to run; its models' state is gone."""
        self.up = False
        TRAINER_UP.labels(self.address).set(0)
        pending = list(self._in_flight.values()) + self.queue.drain()
        self._in_flight.clear()
        self._sent.clear()
        for model in self._models.values():
            model.lost = LOST_MESSAGE.format(address=self.address, model_id=model.model_id)
        for request in pending:
            if not request.outcome.done():
                message = LOST_MESSAGE.format(address=self.address, model_id=request.model_id)
                request.outcome.set_result(_failure(request, grpc.StatusCode.UNAVAILABLE, message))
        self._models.clear()
        self._report_depth()
        self.on_lost(self)


@dataclass(eq=False)
class _SentCycle:
    """A plan sent to the trainer, until its CycleDone."""

    number: int
    requests: list[Request]
    started: float  # when the plan went out
    work_at: float  # when its work began waiting at an empty queue
    waves: int = field(init=False)

    def __post_init__(self) -> None:
        self.waves = max(Tally(r.model_id for r in self.requests).values())


class _LinkMetrics:
    """The link's labelled metric children, looked up once per connection."""

    def __init__(self, address: str, base_model: str) -> None:
        self.cycles = CYCLES.labels(base_model)
        self.cycle_seconds = CYCLE_SECONDS.labels(base_model)
        self.cycle_ops = CYCLE_OPS.labels(base_model)
        self.cycle_tokens = CYCLE_TOKENS.labels(base_model)
        self.cycle_tenants = CYCLE_TENANTS.labels(base_model)
        self.overhead = OVERHEAD_SECONDS.labels(base_model)
        self.queue_depth = QUEUE_DEPTH.labels(base_model)
        self.busy = BUSY_SECONDS.labels(address)

    def planned(self, chosen: list[Request], now: float, queued: int) -> None:
        """A plan went out."""
        for request in chosen:
            QUEUE_WAIT.observe(now - request.enqueued_at)
        self.queue_depth.set(queued)
        self.cycle_tenants.observe(len({r.tenant for r in chosen}))

    def cycle_done(self, seconds: float, ops: int, tokens: int) -> None:
        """A cycle ended."""
        self.cycles.inc()
        self.cycle_seconds.observe(seconds)
        self.cycle_ops.observe(ops)
        self.cycle_tokens.observe(tokens)


def _failure(request: Request, code: grpc.StatusCode, message: str) -> trainer_pb2.OpResult:
    return trainer_pb2.OpResult(op_id=request.op.op_id, error=error_detail(code, message))
