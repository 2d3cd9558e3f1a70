"""The `treadle.v1.Trainer` servicer: RunCycles (plans in, op results out) and GetTrainerInfo.

A RunCycles stream handles its plans one at a time, in order; the cycle runner serialises plans
across streams, so a trainer executes one cycle at a time. Plans execute in a task of their own
that hands events to the stream through a queue: each gRPC write costs a round trip through the
completion queue, and a wave's results stream out while the next wave computes instead of holding
it back (so the cycle's busy time is execution, not waiting on the network).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

import grpc
import torch

from treadle.v1 import trainer_pb2, trainer_pb2_grpc
from treadle_trainer.config import TrainerConfig
from treadle_trainer.cycle import CheckpointStore, CycleRunner, torch_worker
from treadle_trainer.engine import TrainerEngine

log = logging.getLogger(__name__)

SERVICE_NAME = "treadle.v1.Trainer"


class NotAPlanError(ValueError):
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
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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
                    raise NotAPlanError("command: expected a plan")
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


def checkpoint_store(address: str) -> CheckpointStore | None:
    """A client of the Checkpoints service at `address`, or None when none is configured."""
    if not address:
        return None
    from treadle_runtime.checkpoint_client import CheckpointClient

    return CheckpointClient(address)


class TrainerApp:
    """One trainer process: `setup` loads the base model and registers the servicer; `close`
    stops the torch worker and the checkpoint client (the server's shutdown hook)."""

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.runner: CycleRunner | None = None

    async def setup(self, server: grpc.aio.Server) -> list[str]:
        """Load the base model (off the event loop) and register the Trainer servicer."""
        config = self.config
        if config.torch_threads:  # e.g. the CPU limit of a container, not the host's cores
            torch.set_num_threads(config.torch_threads)
        worker = torch_worker()  # every torch op of this process runs on it (cycle.py)
        loop = asyncio.get_running_loop()
        build = functools.partial(
            TrainerEngine,
            config.base_model,
            device=config.device,
            dtype=config.dtype,
            max_seq_len=config.max_seq_len,
            max_pass_tokens=config.max_pass_tokens,
            max_resident_adapters=config.max_resident_adapters,
            offload=config.offload,
            offload_dir=config.offload_dir,
            head_chunk_rows=config.head_chunk_rows,
            peak_flops=config.peak_flops,
        )
        try:
            engine = await loop.run_in_executor(worker, build)
            if not engine.peak_flops:
                await loop.run_in_executor(worker, engine.measure_peak)
        except BaseException:
            worker.shutdown(wait=False)
            raise
        self.runner = CycleRunner(
            engine,
            checkpoint_store(config.checkpoints),
            state_ttl_seconds=config.state_ttl_seconds,
            sampler_ttl_seconds=config.sampler_ttl_seconds,
            worker=worker,
        )
        trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(self.runner), server)
        log.info(
            "trainer ready",
            extra={
                "base_model": engine.spec.name,
                "device": str(engine.device),
                "peak_tflops": round(engine.peak_flops / 1e12, 3),
            },
        )
        return [SERVICE_NAME]

    async def close(self) -> None:
        """Release the worker thread and the checkpoint channel."""
        if self.runner is not None:
            await self.runner.close()
