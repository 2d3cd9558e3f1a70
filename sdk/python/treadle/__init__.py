"""Treadle Python SDK: a thin, Tinker-compatible client whose calls return futures.

    import treadle
    from treadle import types

    service = treadle.ServiceClient(base_url="localhost:8470", api_key="tml-...")
    training = service.create_lora_training_client(base_model="treadle/tiny-llama", rank=8)
    fb = training.forward_backward(data, loss_fn="cross_entropy")
    opt = training.optim_step(types.AdamParams(learning_rate=1e-4))
    print(fb.result().metrics["loss:sum"])

No torch is imported at module load; forward_backward_custom imports it when called.
"""

__version__ = "0.1.0"

from treadle import types
from treadle.errors import APIError, RequestFailedError, TreadleError, ValidationError
from treadle.futures import APIFuture
from treadle.rest_client import RestClient
from treadle.sampling_client import SamplingClient
from treadle.service_client import ServiceClient
from treadle.training_client import TrainingClient
from treadle.types import (
    AdamParams,
    Datum,
    EncodedTextChunk,
    ModelInput,
    SamplingParams,
    TensorData,
)

__all__ = [
    "APIError",
    "APIFuture",
    "AdamParams",
    "Datum",
    "EncodedTextChunk",
    "ModelInput",
    "RequestFailedError",
    "RestClient",
    "SamplingClient",
    "SamplingParams",
    "ServiceClient",
    "TensorData",
    "TrainingClient",
    "TreadleError",
    "ValidationError",
    "types",
]
