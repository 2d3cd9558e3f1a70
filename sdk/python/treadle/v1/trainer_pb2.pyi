from treadle.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateAdapterOp(_message.Message):
    __slots__ = ("tenant", "base_model", "lora_config", "seed", "from_state_path", "load_optimizer")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LORA_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_PATH_FIELD_NUMBER: _ClassVar[int]
    LOAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    base_model: str
    lora_config: _common_pb2.LoraConfig
    seed: int
    from_state_path: str
    load_optimizer: bool
    def __init__(self, tenant: _Optional[str] = ..., base_model: _Optional[str] = ..., lora_config: _Optional[_Union[_common_pb2.LoraConfig, _Mapping]] = ..., seed: _Optional[int] = ..., from_state_path: _Optional[str] = ..., load_optimizer: _Optional[bool] = ...) -> None: ...

class ReleaseAdapterOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlannedOp(_message.Message):
    __slots__ = ("op_id", "model_id", "create_adapter", "forward_backward", "optim_step", "save_checkpoint", "load_state", "release_adapter")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    FORWARD_BACKWARD_FIELD_NUMBER: _ClassVar[int]
    OPTIM_STEP_FIELD_NUMBER: _ClassVar[int]
    SAVE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOAD_STATE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    op_id: str
    model_id: str
    create_adapter: CreateAdapterOp
    forward_backward: _common_pb2.ForwardBackwardRequest
    optim_step: _common_pb2.OptimStepRequest
    save_checkpoint: _common_pb2.SaveCheckpointRequest
    load_state: _common_pb2.LoadStateRequest
    release_adapter: ReleaseAdapterOp
    def __init__(self, op_id: _Optional[str] = ..., model_id: _Optional[str] = ..., create_adapter: _Optional[_Union[CreateAdapterOp, _Mapping]] = ..., forward_backward: _Optional[_Union[_common_pb2.ForwardBackwardRequest, _Mapping]] = ..., optim_step: _Optional[_Union[_common_pb2.OptimStepRequest, _Mapping]] = ..., save_checkpoint: _Optional[_Union[_common_pb2.SaveCheckpointRequest, _Mapping]] = ..., load_state: _Optional[_Union[_common_pb2.LoadStateRequest, _Mapping]] = ..., release_adapter: _Optional[_Union[ReleaseAdapterOp, _Mapping]] = ...) -> None: ...

class CyclePlan(_message.Message):
    __slots__ = ("cycle", "ops")
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    cycle: int
    ops: _containers.RepeatedCompositeFieldContainer[PlannedOp]
    def __init__(self, cycle: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[PlannedOp, _Mapping]]] = ...) -> None: ...

class TrainerCommand(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: CyclePlan
    def __init__(self, plan: _Optional[_Union[CyclePlan, _Mapping]] = ...) -> None: ...

class CreateAdapterResult(_message.Message):
    __slots__ = ("step", "trainable_params")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    step: int
    trainable_params: int
    def __init__(self, step: _Optional[int] = ..., trainable_params: _Optional[int] = ...) -> None: ...

class ReleaseAdapterResult(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OpResult(_message.Message):
    __slots__ = ("op_id", "wave", "error", "create_adapter", "forward_backward", "optim_step", "save_checkpoint", "load_state", "release_adapter")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    FORWARD_BACKWARD_FIELD_NUMBER: _ClassVar[int]
    OPTIM_STEP_FIELD_NUMBER: _ClassVar[int]
    SAVE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOAD_STATE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    op_id: str
    wave: int
    error: _common_pb2.ErrorDetail
    create_adapter: CreateAdapterResult
    forward_backward: _common_pb2.ForwardBackwardOutput
    optim_step: _common_pb2.OptimStepResponse
    save_checkpoint: _common_pb2.SaveCheckpointResponse
    load_state: _common_pb2.LoadStateResponse
    release_adapter: ReleaseAdapterResult
    def __init__(self, op_id: _Optional[str] = ..., wave: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., create_adapter: _Optional[_Union[CreateAdapterResult, _Mapping]] = ..., forward_backward: _Optional[_Union[_common_pb2.ForwardBackwardOutput, _Mapping]] = ..., optim_step: _Optional[_Union[_common_pb2.OptimStepResponse, _Mapping]] = ..., save_checkpoint: _Optional[_Union[_common_pb2.SaveCheckpointResponse, _Mapping]] = ..., load_state: _Optional[_Union[_common_pb2.LoadStateResponse, _Mapping]] = ..., release_adapter: _Optional[_Union[ReleaseAdapterResult, _Mapping]] = ...) -> None: ...

class CycleDone(_message.Message):
    __slots__ = ("cycle", "busy_seconds", "waves", "tokens")
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    BUSY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAVES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    cycle: int
    busy_seconds: float
    waves: int
    tokens: int
    def __init__(self, cycle: _Optional[int] = ..., busy_seconds: _Optional[float] = ..., waves: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class TrainerEvent(_message.Message):
    __slots__ = ("op_result", "cycle_done")
    OP_RESULT_FIELD_NUMBER: _ClassVar[int]
    CYCLE_DONE_FIELD_NUMBER: _ClassVar[int]
    op_result: OpResult
    cycle_done: CycleDone
    def __init__(self, op_result: _Optional[_Union[OpResult, _Mapping]] = ..., cycle_done: _Optional[_Union[CycleDone, _Mapping]] = ...) -> None: ...

class GetTrainerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerInfo(_message.Message):
    __slots__ = ("model", "adapters", "device")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelCapability
    adapters: int
    device: str
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelCapability, _Mapping]] = ..., adapters: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...
