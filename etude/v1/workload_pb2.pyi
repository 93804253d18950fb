from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PowerLawExponents(_message.Message):
    __slots__ = ("alpha_length", "alpha_clicks")
    ALPHA_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ALPHA_CLICKS_FIELD_NUMBER: _ClassVar[int]
    alpha_length: float
    alpha_clicks: float
    def __init__(self, alpha_length: _Optional[float] = ..., alpha_clicks: _Optional[float] = ...) -> None: ...

class ScipyPowerLaw(_message.Message):
    __slots__ = ("a", "loc", "scale")
    A_FIELD_NUMBER: _ClassVar[int]
    LOC_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    a: float
    loc: float
    scale: float
    def __init__(self, a: _Optional[float] = ..., loc: _Optional[float] = ..., scale: _Optional[float] = ...) -> None: ...

class PowerLawFits(_message.Message):
    __slots__ = ("session_lengths", "click_counts")
    SESSION_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    CLICK_COUNTS_FIELD_NUMBER: _ClassVar[int]
    session_lengths: ScipyPowerLaw
    click_counts: ScipyPowerLaw
    def __init__(self, session_lengths: _Optional[_Union[ScipyPowerLaw, _Mapping]] = ..., click_counts: _Optional[_Union[ScipyPowerLaw, _Mapping]] = ...) -> None: ...

class ReplaySource(_message.Message):
    __slots__ = ("path", "session_column", "item_column", "timestamp_column", "no_header")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SESSION_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ITEM_COLUMN_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_COLUMN_FIELD_NUMBER: _ClassVar[int]
    NO_HEADER_FIELD_NUMBER: _ClassVar[int]
    path: str
    session_column: str
    item_column: str
    timestamp_column: str
    no_header: bool
    def __init__(self, path: _Optional[str] = ..., session_column: _Optional[str] = ..., item_column: _Optional[str] = ..., timestamp_column: _Optional[str] = ..., no_header: _Optional[bool] = ...) -> None: ...

class WorkloadSpec(_message.Message):
    __slots__ = ("catalog_size", "exponents", "powerlaw_fits", "replay", "total_clicks", "seed", "max_session_length", "sessions_per_batch", "session_partition", "session_partition_count")
    CATALOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPONENTS_FIELD_NUMBER: _ClassVar[int]
    POWERLAW_FITS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CLICKS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSION_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    SESSION_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SESSION_PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    catalog_size: int
    exponents: PowerLawExponents
    powerlaw_fits: PowerLawFits
    replay: ReplaySource
    total_clicks: int
    seed: int
    max_session_length: int
    sessions_per_batch: int
    session_partition: int
    session_partition_count: int
    def __init__(self, catalog_size: _Optional[int] = ..., exponents: _Optional[_Union[PowerLawExponents, _Mapping]] = ..., powerlaw_fits: _Optional[_Union[PowerLawFits, _Mapping]] = ..., replay: _Optional[_Union[ReplaySource, _Mapping]] = ..., total_clicks: _Optional[int] = ..., seed: _Optional[int] = ..., max_session_length: _Optional[int] = ..., sessions_per_batch: _Optional[int] = ..., session_partition: _Optional[int] = ..., session_partition_count: _Optional[int] = ...) -> None: ...

class SessionBatch(_message.Message):
    __slots__ = ("first_session_id", "session_lengths", "item_ids", "click_offsets_s", "session_id_step")
    FIRST_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CLICK_OFFSETS_S_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_STEP_FIELD_NUMBER: _ClassVar[int]
    first_session_id: int
    session_lengths: _containers.RepeatedScalarFieldContainer[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    click_offsets_s: _containers.RepeatedScalarFieldContainer[float]
    session_id_step: int
    def __init__(self, first_session_id: _Optional[int] = ..., session_lengths: _Optional[_Iterable[int]] = ..., item_ids: _Optional[_Iterable[int]] = ..., click_offsets_s: _Optional[_Iterable[float]] = ..., session_id_step: _Optional[int] = ...) -> None: ...
