from etude.v1 import environment_pb2 as _environment_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("session_id", "item_ids", "k", "request_id", "timeout_ms", "candidate_ids")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    k: int
    request_id: int
    timeout_ms: int
    candidate_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., k: _Optional[int] = ..., request_id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., candidate_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ServerTiming(_message.Message):
    __slots__ = ("queue_us", "inference_us", "batch_size", "server_total_us", "shard_fanout_us", "shard_compute_us", "shard_wire_bytes", "shard_lookup_calls")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    SHARD_FANOUT_US_FIELD_NUMBER: _ClassVar[int]
    SHARD_COMPUTE_US_FIELD_NUMBER: _ClassVar[int]
    SHARD_WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARD_LOOKUP_CALLS_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    inference_us: int
    batch_size: int
    server_total_us: int
    shard_fanout_us: int
    shard_compute_us: int
    shard_wire_bytes: int
    shard_lookup_calls: int
    def __init__(self, queue_us: _Optional[int] = ..., inference_us: _Optional[int] = ..., batch_size: _Optional[int] = ..., server_total_us: _Optional[int] = ..., shard_fanout_us: _Optional[int] = ..., shard_compute_us: _Optional[int] = ..., shard_wire_bytes: _Optional[int] = ..., shard_lookup_calls: _Optional[int] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("item_ids", "scores", "timing", "request_id")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    timing: ServerTiming
    request_id: int
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., timing: _Optional[_Union[ServerTiming, _Mapping]] = ..., request_id: _Optional[int] = ...) -> None: ...

class RequestError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class RecommendStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    response: RecommendResponse
    error: RequestError
    def __init__(self, request_id: _Optional[int] = ..., response: _Optional[_Union[RecommendResponse, _Mapping]] = ..., error: _Optional[_Union[RequestError, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "catalog_size", "embedding_dim", "device", "runtime", "max_session_length", "max_request_items", "max_batch_size", "max_batch_delay_ms", "max_queue_size", "parameter_count", "details", "precision", "accuracy", "environment", "max_candidates", "memory", "shard_memory")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSION_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    SHARD_MEMORY_FIELD_NUMBER: _ClassVar[int]
    model: str
    catalog_size: int
    embedding_dim: int
    device: str
    runtime: str
    max_session_length: int
    max_request_items: int
    max_batch_size: int
    max_batch_delay_ms: float
    max_queue_size: int
    parameter_count: int
    details: _containers.ScalarMap[str, str]
    precision: str
    accuracy: ScoringAccuracy
    environment: _environment_pb2.Environment
    max_candidates: int
    memory: _environment_pb2.ServerMemory
    shard_memory: _containers.RepeatedCompositeFieldContainer[_environment_pb2.ServerMemory]
    def __init__(self, model: _Optional[str] = ..., catalog_size: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., device: _Optional[str] = ..., runtime: _Optional[str] = ..., max_session_length: _Optional[int] = ..., max_request_items: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_batch_delay_ms: _Optional[float] = ..., max_queue_size: _Optional[int] = ..., parameter_count: _Optional[int] = ..., details: _Optional[_Mapping[str, str]] = ..., precision: _Optional[str] = ..., accuracy: _Optional[_Union[ScoringAccuracy, _Mapping]] = ..., environment: _Optional[_Union[_environment_pb2.Environment, _Mapping]] = ..., max_candidates: _Optional[int] = ..., memory: _Optional[_Union[_environment_pb2.ServerMemory, _Mapping]] = ..., shard_memory: _Optional[_Iterable[_Union[_environment_pb2.ServerMemory, _Mapping]]] = ...) -> None: ...

class ScoringAccuracy(_message.Message):
    __slots__ = ("recall_at_k", "k", "sessions", "reference")
    RECALL_AT_K_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    recall_at_k: float
    k: int
    sessions: int
    reference: str
    def __init__(self, recall_at_k: _Optional[float] = ..., k: _Optional[int] = ..., sessions: _Optional[int] = ..., reference: _Optional[str] = ...) -> None: ...
