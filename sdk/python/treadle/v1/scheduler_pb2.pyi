from treadle.v1 import common_pb2 as _common_pb2
from treadle.v1 import checkpoints_pb2 as _checkpoints_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenSession(_message.Message):
    __slots__ = ("session_id", "tags", "client_version")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    tags: _containers.ScalarMap[str, str]
    client_version: str
    def __init__(self, session_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., client_version: _Optional[str] = ...) -> None: ...

class Submit(_message.Message):
    __slots__ = ("request_id", "model_id", "seq_id", "forward_backward", "optim_step", "save_checkpoint", "load_state", "sample", "compute_logprobs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    FORWARD_BACKWARD_FIELD_NUMBER: _ClassVar[int]
    OPTIM_STEP_FIELD_NUMBER: _ClassVar[int]
    SAVE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOAD_STATE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_id: str
    seq_id: int
    forward_backward: _common_pb2.ForwardBackwardRequest
    optim_step: _common_pb2.OptimStepRequest
    save_checkpoint: _common_pb2.SaveCheckpointRequest
    load_state: _common_pb2.LoadStateRequest
    sample: _common_pb2.SampleRequest
    compute_logprobs: _common_pb2.ComputeLogprobsRequest
    def __init__(self, request_id: _Optional[str] = ..., model_id: _Optional[str] = ..., seq_id: _Optional[int] = ..., forward_backward: _Optional[_Union[_common_pb2.ForwardBackwardRequest, _Mapping]] = ..., optim_step: _Optional[_Union[_common_pb2.OptimStepRequest, _Mapping]] = ..., save_checkpoint: _Optional[_Union[_common_pb2.SaveCheckpointRequest, _Mapping]] = ..., load_state: _Optional[_Union[_common_pb2.LoadStateRequest, _Mapping]] = ..., sample: _Optional[_Union[_common_pb2.SampleRequest, _Mapping]] = ..., compute_logprobs: _Optional[_Union[_common_pb2.ComputeLogprobsRequest, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CloseSession(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("open", "submit", "heartbeat", "cancel", "close")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    open: OpenSession
    submit: Submit
    heartbeat: Heartbeat
    cancel: Cancel
    close: CloseSession
    def __init__(self, open: _Optional[_Union[OpenSession, _Mapping]] = ..., submit: _Optional[_Union[Submit, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., close: _Optional[_Union[CloseSession, _Mapping]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session_id", "resumed", "idle_timeout_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    resumed: bool
    idle_timeout_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., resumed: _Optional[bool] = ..., idle_timeout_seconds: _Optional[float] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("request_id", "queue_position", "expected_cycle")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CYCLE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    queue_position: int
    expected_cycle: int
    def __init__(self, request_id: _Optional[str] = ..., queue_position: _Optional[int] = ..., expected_cycle: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("request_id", "cycle", "wave", "forward_backward", "optim_step", "save_checkpoint", "load_state", "sample", "compute_logprobs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_BACKWARD_FIELD_NUMBER: _ClassVar[int]
    OPTIM_STEP_FIELD_NUMBER: _ClassVar[int]
    SAVE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOAD_STATE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cycle: int
    wave: int
    forward_backward: _common_pb2.ForwardBackwardOutput
    optim_step: _common_pb2.OptimStepResponse
    save_checkpoint: _common_pb2.SaveCheckpointResponse
    load_state: _common_pb2.LoadStateResponse
    sample: _common_pb2.SampleResponse
    compute_logprobs: _common_pb2.ComputeLogprobsResponse
    def __init__(self, request_id: _Optional[str] = ..., cycle: _Optional[int] = ..., wave: _Optional[int] = ..., forward_backward: _Optional[_Union[_common_pb2.ForwardBackwardOutput, _Mapping]] = ..., optim_step: _Optional[_Union[_common_pb2.OptimStepResponse, _Mapping]] = ..., save_checkpoint: _Optional[_Union[_common_pb2.SaveCheckpointResponse, _Mapping]] = ..., load_state: _Optional[_Union[_common_pb2.LoadStateResponse, _Mapping]] = ..., sample: _Optional[_Union[_common_pb2.SampleResponse, _Mapping]] = ..., compute_logprobs: _Optional[_Union[_common_pb2.ComputeLogprobsResponse, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("request_id", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    error: _common_pb2.ErrorDetail
    def __init__(self, request_id: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("server_time",)
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    server_time: float
    def __init__(self, server_time: _Optional[float] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("opened", "accepted", "result", "error", "heartbeat_ack")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    accepted: Accepted
    result: Result
    error: Error
    heartbeat_ack: HeartbeatAck
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("models", "max_batch_datums", "loss_fns")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DATUMS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FNS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelCapability]
    max_batch_datums: int
    loss_fns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelCapability, _Mapping]]] = ..., max_batch_datums: _Optional[int] = ..., loss_fns: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("session_id", "base_model", "lora_config", "seed", "from_state_path", "load_optimizer", "model_seq_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LORA_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_PATH_FIELD_NUMBER: _ClassVar[int]
    LOAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    MODEL_SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    base_model: str
    lora_config: _common_pb2.LoraConfig
    seed: int
    from_state_path: str
    load_optimizer: bool
    model_seq_id: int
    def __init__(self, session_id: _Optional[str] = ..., base_model: _Optional[str] = ..., lora_config: _Optional[_Union[_common_pb2.LoraConfig, _Mapping]] = ..., seed: _Optional[int] = ..., from_state_path: _Optional[str] = ..., load_optimizer: _Optional[bool] = ..., model_seq_id: _Optional[int] = ...) -> None: ...

class CreateModelResponse(_message.Message):
    __slots__ = ("model_id", "info")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    info: ModelInfo
    def __init__(self, model_id: _Optional[str] = ..., info: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "base_model", "lora_config", "architecture", "tokenizer_id", "step", "is_lora", "tokenizer_path")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LORA_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    IS_LORA_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_PATH_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    base_model: str
    lora_config: _common_pb2.LoraConfig
    architecture: str
    tokenizer_id: str
    step: int
    is_lora: bool
    tokenizer_path: str
    def __init__(self, model_id: _Optional[str] = ..., base_model: _Optional[str] = ..., lora_config: _Optional[_Union[_common_pb2.LoraConfig, _Mapping]] = ..., architecture: _Optional[str] = ..., tokenizer_id: _Optional[str] = ..., step: _Optional[int] = ..., is_lora: _Optional[bool] = ..., tokenizer_path: _Optional[str] = ...) -> None: ...
