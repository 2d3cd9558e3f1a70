"""One trainer process: the engine on its torch worker, the cycle runner, the servicer.

`setup` loads the base model on the worker thread every torch op of the process runs on
(cycle.py: one OpenMP pool), measures the device's matmul peak there when it is not configured,
and registers the Trainer servicer; `close` stops the worker and the checkpoint client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

import grpc
import torch

from treadle.v1 import trainer_pb2_grpc
from treadle_trainer.config import TrainerConfig
from treadle_trainer.cycle import CheckpointStore, CycleRunner, torch_worker
from treadle_trainer.engine import TrainerEngine
from treadle_trainer.service import TrainerServicer

log = logging.getLogger(__name__)

SERVICE_NAME = "treadle.v1.Trainer"


def checkpoint_store(address: str) -> CheckpointStore | None:
    """A client of the Checkpoints service at `address`, or None when none is configured."""
    if not address:
        return None
    from treadle_runtime.checkpoint_client import CheckpointClient

    return CheckpointClient(address)


class TrainerApp:
    """The trainer as a treadle_runtime.server.App."""

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.runner: CycleRunner | None = None
        self.interceptors: Sequence[grpc.aio.ServerInterceptor] = ()

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
