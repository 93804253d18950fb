from etude.v1 import environment_pb2 as _environment_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LookupRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("rows", "embedding_dim")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    rows: bytes
    embedding_dim: int
    def __init__(self, rows: _Optional[bytes] = ..., embedding_dim: _Optional[int] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("session_representations", "sessions", "k")
    SESSION_REPRESENTATIONS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    session_representations: bytes
    sessions: int
    k: int
    def __init__(self, session_representations: _Optional[bytes] = ..., sessions: _Optional[int] = ..., k: _Optional[int] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("item_ids", "scores", "k", "compute_us")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_US_FIELD_NUMBER: _ClassVar[int]
    item_ids: bytes
    scores: bytes
    k: int
    compute_us: int
    def __init__(self, item_ids: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., k: _Optional[int] = ..., compute_us: _Optional[int] = ...) -> None: ...

class GetShardInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("model", "catalog_size", "embedding_dim", "seed", "shard_index", "shard_count", "strategy", "items_owned", "rows_held", "hot_item_ids", "table_bytes", "item_init", "precision", "memory")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_OWNED_FIELD_NUMBER: _ClassVar[int]
    ROWS_HELD_FIELD_NUMBER: _ClassVar[int]
    HOT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    TABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ITEM_INIT_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    model: str
    catalog_size: int
    embedding_dim: int
    seed: int
    shard_index: int
    shard_count: int
    strategy: str
    items_owned: int
    rows_held: int
    hot_item_ids: _containers.RepeatedScalarFieldContainer[int]
    table_bytes: int
    item_init: str
    precision: str
    memory: _environment_pb2.ServerMemory
    def __init__(self, model: _Optional[str] = ..., catalog_size: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., seed: _Optional[int] = ..., shard_index: _Optional[int] = ..., shard_count: _Optional[int] = ..., strategy: _Optional[str] = ..., items_owned: _Optional[int] = ..., rows_held: _Optional[int] = ..., hot_item_ids: _Optional[_Iterable[int]] = ..., table_bytes: _Optional[int] = ..., item_init: _Optional[str] = ..., precision: _Optional[str] = ..., memory: _Optional[_Union[_environment_pb2.ServerMemory, _Mapping]] = ...) -> None: ...
