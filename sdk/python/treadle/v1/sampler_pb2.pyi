from treadle.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplerSampleRequest(_message.Message):
    __slots__ = ("tenant", "request")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    request: _common_pb2.SampleRequest
    def __init__(self, tenant: _Optional[str] = ..., request: _Optional[_Union[_common_pb2.SampleRequest, _Mapping]] = ...) -> None: ...

class SamplerSampleEvent(_message.Message):
    __slots__ = ("sequence", "done")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    sequence: IndexedSequence
    done: _common_pb2.SampleResponse
    def __init__(self, sequence: _Optional[_Union[IndexedSequence, _Mapping]] = ..., done: _Optional[_Union[_common_pb2.SampleResponse, _Mapping]] = ...) -> None: ...

class IndexedSequence(_message.Message):
    __slots__ = ("index", "sequence")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    index: int
    sequence: _common_pb2.SampledSequence
    def __init__(self, index: _Optional[int] = ..., sequence: _Optional[_Union[_common_pb2.SampledSequence, _Mapping]] = ...) -> None: ...

class SamplerComputeLogprobsRequest(_message.Message):
    __slots__ = ("tenant", "request")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    request: _common_pb2.ComputeLogprobsRequest
    def __init__(self, tenant: _Optional[str] = ..., request: _Optional[_Union[_common_pb2.ComputeLogprobsRequest, _Mapping]] = ...) -> None: ...

class GetSamplerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SamplerInfo(_message.Message):
    __slots__ = ("models", "cached_adapters", "engine")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CACHED_ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelCapability]
    cached_adapters: _containers.RepeatedScalarFieldContainer[str]
    engine: str
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelCapability, _Mapping]]] = ..., cached_adapters: _Optional[_Iterable[str]] = ..., engine: _Optional[str] = ...) -> None: ...
