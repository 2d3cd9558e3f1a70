"""One link per trainer: its cycle loop, from queued requests to a CyclePlan and back.

Cycles are work-conserving: a cycle starts as soon as the previous one has ended and work is
queued (or after `min_cycle_seconds`, if set). A cycle takes queued requests up to the token
budget, shared between tenants by deficit round robin (fairness.py); requests of one model keep
their seq_id order and form the waves of the plan on the trainer. Results are
handed back op by op as the trainer streams them. A trainer that disappears fails its in-flight
and queued requests with UNAVAILABLE, and its models are marked lost; the link reconnects and the
trainer takes new models when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import grpc
from prometheus_client import Counter, Gauge, Histogram

from treadle.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from treadle_runtime.errors import error_detail
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
    "Time of a cycle spent outside the trainer (planning, queueing, gRPC)",
    ["base_model"],
    buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1),
)
QUEUE_DEPTH = Gauge("treadle_scheduler_queue_depth", "Requests queued", ["base_model"])
QUEUE_WAIT = Histogram("treadle_scheduler_queue_wait_seconds", "Submit to cycle start")
TRAINER_UP = Gauge("treadle_scheduler_trainer_up", "1 while a trainer is connected", ["trainer"])

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
    ) -> None:
        self.address = address
        self.token_budget = token_budget
        self.min_cycle_seconds = min_cycle_seconds
        self.retry_seconds = retry_seconds
        self.on_lost = on_lost
        self.spec: common_pb2.ModelCapability | None = None
        self.up = False
        self.cycle = 0  # number of the cycle running now or last run
        self.running = False
        self.queue = FairQueue()
        self.models: dict[str, ModelRecord] = {}
        self._busy_window: deque[tuple[float, float]] = deque()  # (cycle end, busy seconds)
        self._connected_at = 0.0
        self.last_overhead = 0.0
        self._work = asyncio.Event()
        self._in_flight: dict[str, Request] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def base_model(self) -> str:
        """Name of the base model this trainer serves ("" until first contact)."""
        return self.spec.name if self.spec else ""

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

    def enqueue(self, requests: list[Request]) -> tuple[int, int]:
        """Queue ready requests; returns (queue position of the last, expected cycle)."""
        position = self.queued()
        tokens_ahead = self.queue.tokens()
        for request in requests:
            self.queue.push(request.tenant, request)
        QUEUE_DEPTH.labels(self.base_model).set(self.queued())
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
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub: trainer_pb2_grpc.TrainerAsyncStub = trainer_pb2_grpc.TrainerStub(channel)
            info = await stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=10)
            self.spec = info.model
            call = stub.RunCycles()  # type: ignore[call-arg]  # used with write()/read()
            self.up = True
            self._connected_at = time.monotonic()
            TRAINER_UP.labels(self.address).set(1)
            log.info("trainer connected", extra={"trainer": self.address, "model": info.model.name})
            while True:
                try:
                    await asyncio.wait_for(self._work.wait(), timeout=self.retry_seconds)
                except asyncio.TimeoutError:  # idle: make sure the trainer is still there
                    await stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=5)
                    continue
                planning = time.monotonic()
                plan = self._next_plan()
                if plan is None:
                    self._work.clear()
                    continue
                await self._run_cycle(call, plan, planning)

    def _next_plan(self) -> trainer_pb2.CyclePlan | None:
        """Take queued requests fairly between tenants, up to the token budget."""
        chosen = self.queue.take(self.token_budget)
        if not chosen:
            return None
        self.cycle += 1
        now = time.monotonic()
        for request in chosen:
            request.cycle = self.cycle
            QUEUE_WAIT.observe(now - request.enqueued_at)
            self._in_flight[request.op.op_id] = request
        QUEUE_DEPTH.labels(self.base_model).set(self.queued())
        CYCLE_TENANTS.labels(self.base_model).observe(len({r.tenant for r in chosen}))
        return trainer_pb2.CyclePlan(cycle=self.cycle, ops=[r.op for r in chosen])

    async def _run_cycle(
        self, call: grpc.aio.StreamStreamCall, plan: trainer_pb2.CyclePlan, planning: float
    ) -> None:
        """Send a plan, route its results as they stream in, account the cycle's time."""
        started = time.monotonic()
        self.running = True
        await call.write(trainer_pb2.TrainerCommand(plan=plan))
        tokens = 0
        while True:
            event = await call.read()
            if not isinstance(event, trainer_pb2.TrainerEvent):  # grpc.aio.EOF
                raise ConnectionError("trainer closed its cycle stream")
            kind = event.WhichOneof("event")
            if kind == "op_result":
                request = self._in_flight.pop(event.op_result.op_id, None)
                if request is not None and not request.outcome.done():
                    request.outcome.set_result(event.op_result)
            elif kind == "cycle_done":
                tokens = event.cycle_done.tokens
                busy = event.cycle_done.busy_seconds
                break
        self.running = False
        for request in self._in_flight.values():  # an op the trainer never answered
            if not request.outcome.done():
                request.outcome.set_result(_failure(request, grpc.StatusCode.INTERNAL, "no result"))
        self._in_flight.clear()
        ended = time.monotonic()
        elapsed = ended - started
        self._account(ended, ended - planning, busy)
        CYCLES.labels(self.base_model).inc()
        CYCLE_SECONDS.labels(self.base_model).observe(elapsed)
        CYCLE_OPS.labels(self.base_model).observe(len(plan.ops))
        CYCLE_TOKENS.labels(self.base_model).observe(tokens)
        if self.min_cycle_seconds > elapsed:
            await asyncio.sleep(self.min_cycle_seconds - elapsed)

    def _account(self, ended: float, elapsed: float, busy: float) -> None:
        """Busy time, utilization over the last minute, and time spent outside the trainer
        (`elapsed` runs from planning the cycle to its CycleDone)."""
        BUSY_SECONDS.labels(self.address).inc(busy)
        self.last_overhead = max(0.0, elapsed - busy)
        OVERHEAD_SECONDS.labels(self.base_model).observe(self.last_overhead)
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
        self.running = False
        TRAINER_UP.labels(self.address).set(0)
        pending = list(self._in_flight.values()) + self.queue.drain()
        self._in_flight.clear()
        for model in self.models.values():
            model.lost = LOST_MESSAGE.format(address=self.address, model_id=model.model_id)
        for request in pending:
            if not request.outcome.done():
                message = LOST_MESSAGE.format(address=self.address, model_id=request.model_id)
                request.outcome.set_result(_failure(request, grpc.StatusCode.UNAVAILABLE, message))
        self.models.clear()
        QUEUE_DEPTH.labels(self.base_model).set(0)
        self.on_lost(self)


def _failure(request: Request, code: grpc.StatusCode, message: str) -> trainer_pb2.OpResult:
    return trainer_pb2.OpResult(op_id=request.op.op_id, error=error_detail(code, message))
