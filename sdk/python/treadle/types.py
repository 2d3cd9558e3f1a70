"""The SDK's data types, with the names and defaults of Tinker's `tinker.types`.

They are plain dataclasses; tensor-valued fields accept lists, numpy arrays and torch tensors
(torch is never imported here: a tensor is recognised by its `detach`/`cpu` methods).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from treadle.contract.losses import LossName
from treadle.contract.optim import ADAM_DEFAULTS
from treadle.contract.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, TOP_K_OFF
from treadle.tensors import to_numpy_array

DType = Literal["int64", "float32"]
StopReason = Literal["stop", "length"]
LossFnType = LossName  # Tinker's name


@dataclass
class EncodedTextChunk:
    """A run of token ids."""

    tokens: list[int]
    type: Literal["encoded_text"] = "encoded_text"

    @property
    def length(self) -> int:
        """Number of tokens."""
        return len(self.tokens)


ModelInputChunk = EncodedTextChunk


@dataclass
class ModelInput:
    """The tokens a model sees, as chunks concatenated in order."""

    chunks: list[ModelInputChunk] = field(default_factory=list)

    @classmethod
    def from_ints(cls, tokens: Sequence[int] | Any) -> ModelInput:
        """A model input of one chunk holding `tokens`."""
        return cls([EncodedTextChunk([int(t) for t in to_numpy_array(tokens).reshape(-1)])])

    @classmethod
    def empty(cls) -> ModelInput:
        """A model input with no tokens."""
        return cls([])

    def to_ints(self) -> list[int]:
        """All tokens, concatenated."""
        return [t for chunk in self.chunks for t in chunk.tokens]

    @property
    def length(self) -> int:
        """Number of tokens."""
        return sum(chunk.length for chunk in self.chunks)

    def append(self, chunk: ModelInputChunk) -> ModelInput:
        """A new model input with `chunk` appended."""
        return ModelInput([*self.chunks, chunk])

    def append_int(self, token: int) -> ModelInput:
        """A new model input with one token appended."""
        return self.append(EncodedTextChunk([int(token)]))


@dataclass
class TensorData:
    """A tensor as flat data, dtype and shape (Tinker's TensorData)."""

    data: list[int] | list[float]
    dtype: DType
    shape: list[int] | None = None

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> TensorData:
        """TensorData from a numpy array (integers become int64, floats float32)."""
        array = to_numpy_array(array)
        dtype: DType = "int64" if array.dtype == np.int64 else "float32"
        return cls(array.reshape(-1).tolist(), dtype, list(array.shape))

    @classmethod
    def from_torch(cls, tensor: Any) -> TensorData:
        """TensorData from a torch tensor."""
        return cls.from_numpy(to_numpy_array(tensor))

    @classmethod
    def coerce(cls, value: Any) -> TensorData:
        """TensorData from TensorData, a list, a numpy array or a torch tensor."""
        return value if isinstance(value, TensorData) else cls.from_numpy(to_numpy_array(value))

    def to_numpy(self) -> np.ndarray:
        """The data as a numpy array of its shape."""
        array = np.asarray(self.data, dtype=np.int64 if self.dtype == "int64" else np.float32)
        return array.reshape(self.shape) if self.shape is not None else array

    def to_torch(self) -> Any:
        """The data as a torch tensor (imports torch)."""
        import torch

        return torch.from_numpy(self.to_numpy().copy())

    def tolist(self) -> list[Any]:
        """The data as (nested) Python lists."""
        return list(self.to_numpy().tolist())


@dataclass
class Datum:
    """One example: its input tokens and per-token loss inputs."""

    model_input: ModelInput
    loss_fn_inputs: dict[str, TensorData] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.loss_fn_inputs = {k: TensorData.coerce(v) for k, v in self.loss_fn_inputs.items()}


@dataclass
class LoraConfig:
    """LoRA configuration of a training model."""

    rank: int = 32
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True
    alpha: float | None = None


@dataclass
class AdamParams:
    """Adam(W) parameters of one optim_step (Tinker's defaults)."""

    learning_rate: float = ADAM_DEFAULTS["learning_rate"]
    beta1: float = ADAM_DEFAULTS["beta1"]
    beta2: float = ADAM_DEFAULTS["beta2"]
    eps: float = ADAM_DEFAULTS["eps"]
    weight_decay: float = ADAM_DEFAULTS["weight_decay"]  # decoupled (AdamW)
    grad_clip_norm: float = ADAM_DEFAULTS["grad_clip_norm"]  # 0 = off


@dataclass
class SamplingParams:
    """How to sample."""

    max_tokens: int | None = None
    seed: int | None = None
    stop: str | Sequence[str] | Sequence[int] | None = None
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = TOP_K_OFF  # <= 0 keeps every token
    top_p: float = DEFAULT_TOP_P


@dataclass
class SampledSequence:
    """One completion."""

    stop_reason: StopReason
    tokens: list[int]
    logprobs: list[float] | None = None


@dataclass
class SampleResponse:
    """Completions of one prompt, and the weights version that produced them."""

    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    weights_version: str = ""


@dataclass
class ForwardBackwardOutput:
    """Per-datum loss outputs (`logprobs`, `elementwise_loss`) and `name:reduction` metrics."""

    loss_fn_output_type: str
    loss_fn_outputs: list[dict[str, TensorData]]
    metrics: dict[str, float]


@dataclass
class OptimStepResponse:
    """Optimizer step metrics."""

    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SaveWeightsResponse:
    """Where a state checkpoint was saved."""

    path: str


@dataclass
class SaveWeightsForSamplerResponse:
    """Where a sampler checkpoint was saved."""

    path: str


@dataclass
class LoadWeightsResponse:
    """A state checkpoint was loaded."""

    path: str
    step: int = 0


@dataclass
class Checkpoint:
    """A stored checkpoint's metadata."""

    checkpoint_id: str
    checkpoint_type: Literal["training", "sampler"]
    path: str
    run_id: str
    base_model: str
    step: int
    time: float
    expires_at: float | None
    size_bytes: int
    renderer_name: str = ""


@dataclass
class ModelData:
    """Base model facts of a training model."""

    arch: str
    model_name: str
    tokenizer_id: str


@dataclass
class GetInfoResponse:
    """Description of a training model."""

    model_id: str
    model_data: ModelData
    is_lora: bool
    lora_rank: int
    step: int = 0


@dataclass
class SupportedModel:
    """A base model the service offers."""

    model_name: str
    vocab_size: int
    max_seq_len: int
    supported_ranks: list[int]
    loss_fns: list[str] = field(default_factory=list)  # the losses its trainers run


@dataclass
class GetServerCapabilitiesResponse:
    """What the service offers."""

    supported_models: list[SupportedModel]
    loss_fns: list[str] = field(default_factory=list)
