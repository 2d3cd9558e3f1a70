"""The `treadle.v1.Trainer` servicer: RunCycles (plans in, op results out) and GetTrainerInfo.

A RunCycles stream handles its plans one at a time, in order; the cycle runner serialises plans
across streams, so a trainer executes one cycle at a time. Plans execute in a task of their own
that hands events to the stream through a queue: each gRPC write costs a round trip through the
completion queue, and a wave's results stream out while the next wave computes instead of holding
it back (so the cycle's busy time is execution, not waiting on the network).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from treadle.errors import ValidationError
from treadle.v1 import trainer_pb2, trainer_pb2_grpc
from treadle_runtime.errors import abort
from treadle_trainer.cycle import CycleRunner

log = logging.getLogger(__name__)


class NotAPlanError(ValidationError):
    """A RunCycles command that is not a plan."""


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """Serves one CycleRunner."""

    def __init__(self, runner: CycleRunner) -> None:
        self.runner = runner

    async def RunCycles(
        self,
        request_iterator: AsyncIterator[trainer_pb2.TrainerCommand],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[trainer_pb2.TrainerEvent]:
        """Execute each plan as it arrives and stream its events."""
        events: asyncio.Queue[trainer_pb2.TrainerEvent | None] = asyncio.Queue()
        executor = asyncio.create_task(self._execute(request_iterator, events))
        try:
            while (event := await events.get()) is not None:
                yield event
            await executor  # the plans ended: raises if a command was not a plan
        except NotAPlanError as exc:
            await abort(context, exc, "RunCycles")
        finally:
            executor.cancel()
            await asyncio.gather(executor, return_exceptions=True)

    async def _execute(
        self,
        request_iterator: AsyncIterator[trainer_pb2.TrainerCommand],
        events: asyncio.Queue[trainer_pb2.TrainerEvent | None],
    ) -> None:
        """Run the stream's plans in order, queueing their events; None marks the end."""
        try:
            async for command in request_iterator:
                if command.WhichOneof("command") != "plan":
                    raise NotAPlanError("command: expected a plan", "command")
                plan = command.plan
                log.debug("cycle", extra={"cycle": plan.cycle, "ops": len(plan.ops)})
                async for event in self.runner.run(plan):
                    events.put_nowait(event)
        finally:
            events.put_nowait(None)

    async def GetTrainerInfo(
        self, request: trainer_pb2.GetTrainerInfoRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.TrainerInfo:
        """The base model served, the adapters held and the device."""
        return self.runner.info()
