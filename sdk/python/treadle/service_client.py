"""ServiceClient: the entry point, as in Tinker. It holds the session with the scheduler and
creates training, sampling and rest clients.

    client = treadle.ServiceClient(base_url="localhost:8470", api_key="tml-...")
    training = client.create_lora_training_client(base_model="treadle/tiny-llama", rank=8)
"""

from __future__ import annotations

import os
from typing import Any

from treadle import wire
from treadle.errors import ValidationError
from treadle.futures import APIFuture
from treadle.rest_client import RestClient
from treadle.sampling_client import SamplingClient
from treadle.session import Connection
from treadle.training_client import TrainingClient
from treadle.types import GetServerCapabilitiesResponse, LoraConfig, SupportedModel
from treadle.v1 import scheduler_pb2

DEFAULT_BASE_URL = "localhost:8470"


def _target(base_url: str) -> str:
    for scheme in ("grpc://", "http://", "https://"):
        if base_url.startswith(scheme):
            base_url = base_url[len(scheme) :]
    return base_url.rstrip("/")


class ServiceClient:
    """A session with a Treadle service."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, **kwargs: Any
    ) -> None:
        base_url = (
            base_url
            or os.environ.get("TREADLE_BASE_URL")
            or os.environ.get("TINKER_BASE_URL")
            or DEFAULT_BASE_URL
        )
        api_key = api_key or os.environ.get("TREADLE_API_KEY") or os.environ.get("TINKER_API_KEY")
        if not api_key:
            raise ValidationError("api_key: pass api_key= or set TREADLE_API_KEY")
        self.connection = Connection(_target(base_url), api_key, **kwargs)

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self.connection.session_id

    def close(self) -> None:
        """End the session."""
        self.connection.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        """Base models offered and their limits."""
        caps = self.connection.unary(
            "GetCapabilities", scheduler_pb2.GetCapabilitiesRequest()
        ).result()
        return GetServerCapabilitiesResponse(
            supported_models=[
                SupportedModel(
                    m.name, m.vocab_size, m.max_seq_len, list(m.supported_ranks), list(m.loss_fns)
                )
                for m in caps.models
            ],
            loss_fns=list(caps.loss_fns),
        )

    def _create(
        self, request: scheduler_pb2.CreateModelRequest, renderer_name: str = ""
    ) -> TrainingClient:
        request.session_id = self.session_id
        created = self.connection.unary("CreateModel", request).result()
        return TrainingClient(self, created.model_id, created.info.base_model, renderer_name)

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
    ) -> TrainingClient:
        """A new LoRA training model on `base_model`.

        `user_metadata["renderer_name"]` is recorded in the model's checkpoints.
        """
        if rank <= 0:
            raise ValidationError(f"rank: must be > 0, got {rank}")
        lora = LoraConfig(
            rank=rank, train_attn=train_attn, train_mlp=train_mlp, train_unembed=train_unembed
        )
        request = scheduler_pb2.CreateModelRequest(
            base_model=base_model, lora_config=wire.lora_to_proto(lora)
        )
        if seed is not None:
            request.seed = seed
        return self._create(request, (user_metadata or {}).get("renderer_name", ""))

    def create_training_client_from_state(self, path: str) -> TrainingClient:
        """A new training model with the weights of a state checkpoint (fresh optimizer); it
        keeps the checkpoint's renderer name for its own saves."""
        return self._from_state(path, load_optimizer=False)

    def create_training_client_from_state_with_optimizer(self, path: str) -> TrainingClient:
        """A new training model with the weights and optimizer state of a state checkpoint."""
        return self._from_state(path, load_optimizer=True)

    def _from_state(self, path: str, load_optimizer: bool) -> TrainingClient:
        renderer_name = self.create_rest_client().get_weights_info(path).result().renderer_name
        return self._create(
            scheduler_pb2.CreateModelRequest(from_state_path=path, load_optimizer=load_optimizer),
            renderer_name,
        )

    def create_sampling_client(
        self, model_path: str | None = None, base_model: str | None = None
    ) -> SamplingClient:
        """A sampling client bound to a sampler checkpoint, or to a base model's own weights."""
        return SamplingClient(self, model_path or "", base_model or "")

    def create_rest_client(self) -> RestClient:
        """A client for checkpoint administration."""
        return RestClient(self)

    def get_tokenizer(self, tokenizer_id: str) -> Any:
        """The tokenizer named by a model's tokenizer_id (offline: local or built-in models)."""
        try:
            from treadle_models import load_tokenizer  # present where the services are installed
        except ImportError:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(tokenizer_id)
        return load_tokenizer(tokenizer_id)

    async def create_lora_training_client_async(self, *args: Any, **kwargs: Any) -> TrainingClient:
        """Async twin of create_lora_training_client."""
        import asyncio

        return await asyncio.to_thread(self.create_lora_training_client, *args, **kwargs)


__all__ = ["APIFuture", "ServiceClient"]
