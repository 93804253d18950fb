from etude.v1 import environment_pb2 as _environment_pb2
from etude.v1 import loadgen_pb2 as _loadgen_pb2
from etude.v1 import workload_pb2 as _workload_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrialState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATE_UNSPECIFIED: _ClassVar[TrialState]
    TRIAL_STATE_PENDING: _ClassVar[TrialState]
    TRIAL_STATE_DEPLOYING: _ClassVar[TrialState]
    TRIAL_STATE_RUNNING: _ClassVar[TrialState]
    TRIAL_STATE_SUCCEEDED: _ClassVar[TrialState]
    TRIAL_STATE_FAILED: _ClassVar[TrialState]
    TRIAL_STATE_CANCELLED: _ClassVar[TrialState]
    TRIAL_STATE_INTERRUPTED: _ClassVar[TrialState]
TRIAL_STATE_UNSPECIFIED: TrialState
TRIAL_STATE_PENDING: TrialState
TRIAL_STATE_DEPLOYING: TrialState
TRIAL_STATE_RUNNING: TrialState
TRIAL_STATE_SUCCEEDED: TrialState
TRIAL_STATE_FAILED: TrialState
TRIAL_STATE_CANCELLED: TrialState
TRIAL_STATE_INTERRUPTED: TrialState

class ModelSpec(_message.Message):
    __slots__ = ("name", "embedding_dim", "model_path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    embedding_dim: int
    model_path: str
    def __init__(self, name: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., model_path: _Optional[str] = ...) -> None: ...

class WorkloadStats(_message.Message):
    __slots__ = ("source", "exponents", "seed", "preset", "powerlaw_fits", "path", "session_column", "item_column", "timestamp_column", "no_header", "pace", "speedup", "max_session_length")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPONENTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    POWERLAW_FITS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SESSION_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ITEM_COLUMN_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_COLUMN_FIELD_NUMBER: _ClassVar[int]
    NO_HEADER_FIELD_NUMBER: _ClassVar[int]
    PACE_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSION_LENGTH_FIELD_NUMBER: _ClassVar[int]
    source: str
    exponents: _workload_pb2.PowerLawExponents
    seed: int
    preset: str
    powerlaw_fits: _workload_pb2.PowerLawFits
    path: str
    session_column: str
    item_column: str
    timestamp_column: str
    no_header: bool
    pace: str
    speedup: float
    max_session_length: int
    def __init__(self, source: _Optional[str] = ..., exponents: _Optional[_Union[_workload_pb2.PowerLawExponents, _Mapping]] = ..., seed: _Optional[int] = ..., preset: _Optional[str] = ..., powerlaw_fits: _Optional[_Union[_workload_pb2.PowerLawFits, _Mapping]] = ..., path: _Optional[str] = ..., session_column: _Optional[str] = ..., item_column: _Optional[str] = ..., timestamp_column: _Optional[str] = ..., no_header: _Optional[bool] = ..., pace: _Optional[str] = ..., speedup: _Optional[float] = ..., max_session_length: _Optional[int] = ...) -> None: ...

class HardwareOption(_message.Message):
    __slots__ = ("name", "device", "monthly_cost_usd", "replicas", "cpu_threads", "executors", "catalog_shards", "shard_strategy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_COST_USD_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CPU_THREADS_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SHARDS_FIELD_NUMBER: _ClassVar[int]
    SHARD_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    name: str
    device: str
    monthly_cost_usd: float
    replicas: int
    cpu_threads: int
    executors: int
    catalog_shards: int
    shard_strategy: str
    def __init__(self, name: _Optional[str] = ..., device: _Optional[str] = ..., monthly_cost_usd: _Optional[float] = ..., replicas: _Optional[int] = ..., cpu_threads: _Optional[int] = ..., executors: _Optional[int] = ..., catalog_shards: _Optional[int] = ..., shard_strategy: _Optional[str] = ...) -> None: ...

class Batching(_message.Message):
    __slots__ = ("max_batch_size", "max_batch_delay_ms", "max_queue_size")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_batch_delay_ms: float
    max_queue_size: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_batch_delay_ms: _Optional[float] = ..., max_queue_size: _Optional[int] = ...) -> None: ...

class ServiceLevelObjective(_message.Message):
    __slots__ = ("percentile", "latency_ms", "rate_per_s")
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    percentile: float
    latency_ms: float
    rate_per_s: float
    def __init__(self, percentile: _Optional[float] = ..., latency_ms: _Optional[float] = ..., rate_per_s: _Optional[float] = ...) -> None: ...

class ExperimentSpec(_message.Message):
    __slots__ = ("name", "models", "catalog_sizes", "embedding_policy", "workload", "hardware", "runtimes", "batching", "load", "slo", "repetitions", "target", "results", "loadgen_instances", "precisions", "loadgen_transport", "search")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SIZES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_POLICY_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    SLO_FIELD_NUMBER: _ClassVar[int]
    REPETITIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    LOADGEN_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    LOADGEN_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    models: _containers.RepeatedCompositeFieldContainer[ModelSpec]
    catalog_sizes: _containers.RepeatedScalarFieldContainer[int]
    embedding_policy: str
    workload: WorkloadStats
    hardware: _containers.RepeatedCompositeFieldContainer[HardwareOption]
    runtimes: _containers.RepeatedScalarFieldContainer[str]
    batching: Batching
    load: _loadgen_pb2.LoadProfile
    slo: ServiceLevelObjective
    repetitions: int
    target: str
    results: str
    loadgen_instances: int
    precisions: _containers.RepeatedScalarFieldContainer[str]
    loadgen_transport: str
    search: RateSearch
    def __init__(self, name: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelSpec, _Mapping]]] = ..., catalog_sizes: _Optional[_Iterable[int]] = ..., embedding_policy: _Optional[str] = ..., workload: _Optional[_Union[WorkloadStats, _Mapping]] = ..., hardware: _Optional[_Iterable[_Union[HardwareOption, _Mapping]]] = ..., runtimes: _Optional[_Iterable[str]] = ..., batching: _Optional[_Union[Batching, _Mapping]] = ..., load: _Optional[_Union[_loadgen_pb2.LoadProfile, _Mapping]] = ..., slo: _Optional[_Union[ServiceLevelObjective, _Mapping]] = ..., repetitions: _Optional[int] = ..., target: _Optional[str] = ..., results: _Optional[str] = ..., loadgen_instances: _Optional[int] = ..., precisions: _Optional[_Iterable[str]] = ..., loadgen_transport: _Optional[str] = ..., search: _Optional[_Union[RateSearch, _Mapping]] = ...) -> None: ...

class RateSearch(_message.Message):
    __slots__ = ("start_rate_per_s", "max_rate_per_s", "precision", "max_probes")
    START_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    MAX_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MAX_PROBES_FIELD_NUMBER: _ClassVar[int]
    start_rate_per_s: float
    max_rate_per_s: float
    precision: float
    max_probes: int
    def __init__(self, start_rate_per_s: _Optional[float] = ..., max_rate_per_s: _Optional[float] = ..., precision: _Optional[float] = ..., max_probes: _Optional[int] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("trial_id", "model", "catalog_size", "embedding_dim", "hardware", "runtime", "repetition", "precision")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    REPETITION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    model: ModelSpec
    catalog_size: int
    embedding_dim: int
    hardware: HardwareOption
    runtime: str
    repetition: int
    precision: str
    def __init__(self, trial_id: _Optional[str] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., catalog_size: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., hardware: _Optional[_Union[HardwareOption, _Mapping]] = ..., runtime: _Optional[str] = ..., repetition: _Optional[int] = ..., precision: _Optional[str] = ...) -> None: ...

class TrialResult(_message.Message):
    __slots__ = ("trial", "state", "summary", "slo_met", "slo_verdict", "error", "results_uri", "probes", "max_sustained_rate_per_s", "recall_at_k", "recall_k", "recall_sessions", "inference_environment", "server_memory")
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SLO_MET_FIELD_NUMBER: _ClassVar[int]
    SLO_VERDICT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULTS_URI_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    MAX_SUSTAINED_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_K_FIELD_NUMBER: _ClassVar[int]
    RECALL_K_FIELD_NUMBER: _ClassVar[int]
    RECALL_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SERVER_MEMORY_FIELD_NUMBER: _ClassVar[int]
    trial: Trial
    state: TrialState
    summary: _loadgen_pb2.LoadSummary
    slo_met: bool
    slo_verdict: str
    error: str
    results_uri: str
    probes: _containers.RepeatedCompositeFieldContainer[SearchProbe]
    max_sustained_rate_per_s: float
    recall_at_k: float
    recall_k: int
    recall_sessions: int
    inference_environment: _environment_pb2.Environment
    server_memory: _containers.RepeatedCompositeFieldContainer[_environment_pb2.ServerMemory]
    def __init__(self, trial: _Optional[_Union[Trial, _Mapping]] = ..., state: _Optional[_Union[TrialState, str]] = ..., summary: _Optional[_Union[_loadgen_pb2.LoadSummary, _Mapping]] = ..., slo_met: _Optional[bool] = ..., slo_verdict: _Optional[str] = ..., error: _Optional[str] = ..., results_uri: _Optional[str] = ..., probes: _Optional[_Iterable[_Union[SearchProbe, _Mapping]]] = ..., max_sustained_rate_per_s: _Optional[float] = ..., recall_at_k: _Optional[float] = ..., recall_k: _Optional[int] = ..., recall_sessions: _Optional[int] = ..., inference_environment: _Optional[_Union[_environment_pb2.Environment, _Mapping]] = ..., server_memory: _Optional[_Iterable[_Union[_environment_pb2.ServerMemory, _Mapping]]] = ...) -> None: ...

class SearchProbe(_message.Message):
    __slots__ = ("rate_per_s", "slo_met", "verdict", "summary")
    RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    SLO_MET_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    rate_per_s: float
    slo_met: bool
    verdict: str
    summary: _loadgen_pb2.LoadSummary
    def __init__(self, rate_per_s: _Optional[float] = ..., slo_met: _Optional[bool] = ..., verdict: _Optional[str] = ..., summary: _Optional[_Union[_loadgen_pb2.LoadSummary, _Mapping]] = ...) -> None: ...
