"""SamplingClient: sampling and logprobs bound to one immutable weights version.

A client made by save_weights_and_get_sampling_client samples exactly the weights saved then;
every response names the version it came from, and a response from any other version is an
error, never a silent stale sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from treadle import wire
from treadle.contract import sampling
from treadle.errors import RequestFailedError, ValidationError
from treadle.futures import APIFuture
from treadle.paths import same_weights
from treadle.types import ModelInput, SampleResponse, SamplingParams
from treadle.v1 import common_pb2, scheduler_pb2

if TYPE_CHECKING:
    from treadle.service_client import ServiceClient


class SamplingClient:
    """Samples from a sampler checkpoint (model_path) or from a base model."""

    def __init__(self, service: ServiceClient, model_path: str = "", base_model: str = "") -> None:
        if not model_path and not base_model:
            raise ValidationError("model_path or base_model is required")
        self.service = service
        self.model_path = model_path
        self.base_model = base_model

    @property
    def weights_version(self) -> str:
        """The weights this client is bound to."""
        return self.model_path or self.base_model

    def _check_version(self, version: str) -> str:
        if version and not same_weights(version, self.weights_version):
            raise RequestFailedError(
                "INTERNAL",
                f"sampled {version!r}, but this client is bound to {self.weights_version!r}",
                "server",
            )
        return version

    def _prompt(self, prompt: ModelInput) -> common_pb2.ModelInput:
        return wire.model_input_to_proto(prompt, "prompt")

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int = 1,
        sampling_params: SamplingParams | None = None,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
    ) -> APIFuture[SampleResponse]:
        """Sample `num_samples` completions of `prompt`."""
        sampling.check_num_samples(num_samples)
        if topk_prompt_logprobs:
            raise ValidationError(
                "topk_prompt_logprobs: not supported; use include_prompt_logprobs"
            )
        request = common_pb2.SampleRequest(
            model_path=self.model_path,
            base_model=self.base_model,
            prompt=self._prompt(prompt),
            num_samples=num_samples,
            sampling_params=wire.sampling_params_to_proto(
                sampling_params or SamplingParams(max_tokens=16)
            ),
            include_prompt_logprobs=include_prompt_logprobs,
        )

        def convert(result: Any) -> SampleResponse:
            self._check_version(result.sample.weights_version)
            return wire.sample_from_proto(result.sample, include_prompt_logprobs)

        return APIFuture(
            self.service.connection.submit(scheduler_pb2.Submit(sample=request)), convert
        )

    def compute_logprobs(self, prompt: ModelInput) -> APIFuture[list[float | None]]:
        """Logprob of each token given its prefix; the first entry is None."""
        request = common_pb2.ComputeLogprobsRequest(
            model_path=self.model_path, base_model=self.base_model, prompt=self._prompt(prompt)
        )

        def convert(result: Any) -> list[float | None]:
            self._check_version(result.compute_logprobs.weights_version)
            return [None, *result.compute_logprobs.logprobs]

        submit = scheduler_pb2.Submit(compute_logprobs=request)
        return APIFuture(self.service.connection.submit(submit), convert)

    async def sample_async(self, *args: Any, **kwargs: Any) -> APIFuture[SampleResponse]:
        """Async twin of sample."""
        return self.sample(*args, **kwargs)

    async def compute_logprobs_async(self, prompt: ModelInput) -> APIFuture[list[float | None]]:
        """Async twin of compute_logprobs."""
        return self.compute_logprobs(prompt)
