"""The Sampler gRPC service: checks each request, pins its adapter, streams the engine's output.

Sample streams one IndexedSequence per sequence as soon as it finishes, then a `done`
SampleResponse naming the weights version (the canonical sampler checkpoint path, or the base
model's name) and, when asked, the prompt logprobs (computed alongside the sampling).
ComputeLogprobs answers tokens 1..T-1. A failed request ends with its own status code only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext

import grpc

from treadle.v1 import common_pb2, sampler_pb2, sampler_pb2_grpc
from treadle_runtime.capability import model_capability
from treadle_runtime.errors import rpc, streaming_rpc
from treadle_sampler import metrics
from treadle_sampler.adapters import AdapterCache
from treadle_sampler.engine import Completion, SamplingEngine
from treadle_sampler.validation import logprobs_call, sample_call

log = logging.getLogger(__name__)

SERVICE_NAME = "treadle.v1.Sampler"
STOP_REASONS = {"stop": common_pb2.STOP_REASON_STOP, "length": common_pb2.STOP_REASON_LENGTH}


class SamplerServicer(sampler_pb2_grpc.SamplerServicer):
    """Serves one engine's base model and the adapters its cache loads."""

    def __init__(self, engine: SamplingEngine, adapters: AdapterCache, max_num_samples: int):
        self.engine = engine
        self.adapters = adapters
        self.max_num_samples = max_num_samples

    @streaming_rpc(metrics.REQUESTS)
    async def Sample(
        self, request: sampler_pb2.SamplerSampleRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[sampler_pb2.SamplerSampleEvent]:
        """Stream each finished sequence, then the prompt logprobs and weights version."""
        spec = self.engine.spec
        call = sample_call(request.request, request.tenant, spec, self.max_num_samples)
        done = common_pb2.SampleResponse(weights_version=call.path or spec.name)
        async with self._weights(request.tenant, call.path) as adapter:
            prompt_logprobs = None
            if call.include_prompt_logprobs:
                work = self.engine.compute_logprobs(adapter, call.prompt)
                prompt_logprobs = asyncio.ensure_future(work)
            try:
                completions = self.engine.sample(
                    adapter, call.prompt, call.num_samples, call.options
                )
                async for index, completion in completions:
                    sequence = sampler_pb2.IndexedSequence(
                        index=index, sequence=_sequence(completion)
                    )
                    yield sampler_pb2.SamplerSampleEvent(sequence=sequence)
                if prompt_logprobs is not None:
                    done.prompt_logprobs.extend(await prompt_logprobs)
            finally:
                if prompt_logprobs is not None and not prompt_logprobs.done():
                    prompt_logprobs.cancel()
        yield sampler_pb2.SamplerSampleEvent(done=done)

    @rpc(metrics.REQUESTS)
    async def ComputeLogprobs(
        self, request: sampler_pb2.SamplerComputeLogprobsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ComputeLogprobsResponse:
        """Logprobs of tokens 1..T-1 given their prefix."""
        spec = self.engine.spec
        path, tokens = logprobs_call(request.request, request.tenant, spec)
        async with self._weights(request.tenant, path) as adapter:
            logprobs = await self.engine.compute_logprobs(adapter, tokens)
        return common_pb2.ComputeLogprobsResponse(
            logprobs=logprobs, weights_version=path or spec.name
        )

    async def GetSamplerInfo(
        self, request: sampler_pb2.GetSamplerInfoRequest, context: grpc.aio.ServicerContext
    ) -> sampler_pb2.SamplerInfo:
        """The base model served, the adapters loaded, and the engine."""
        return sampler_pb2.SamplerInfo(
            models=[model_capability(self.engine.spec)],
            cached_adapters=self.adapters.paths(),
            engine=self.engine.name,
        )

    def _weights(self, tenant: str, path: str | None) -> AbstractAsyncContextManager[str | None]:
        if path is None:
            return nullcontext(None)
        return self.adapters.use(tenant, path)


def _sequence(completion: Completion) -> common_pb2.SampledSequence:
    return common_pb2.SampledSequence(
        tokens=completion.tokens,
        logprobs=completion.logprobs,
        stop_reason=STOP_REASONS[completion.stop_reason],
    )
