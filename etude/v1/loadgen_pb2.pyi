from etude.v1 import workload_pb2 as _workload_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadProfile(_message.Message):
    __slots__ = ("target_rate_per_s", "ramp_duration_s", "hold_duration_s", "request_timeout_ms", "k", "candidates_per_request")
    TARGET_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    RAMP_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    HOLD_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    target_rate_per_s: float
    ramp_duration_s: int
    hold_duration_s: int
    request_timeout_ms: int
    k: int
    candidates_per_request: int
    def __init__(self, target_rate_per_s: _Optional[float] = ..., ramp_duration_s: _Optional[int] = ..., hold_duration_s: _Optional[int] = ..., request_timeout_ms: _Optional[int] = ..., k: _Optional[int] = ..., candidates_per_request: _Optional[int] = ...) -> None: ...

class LoadSpec(_message.Message):
    __slots__ = ("target", "profile", "workload", "workload_endpoint", "records_dir", "run_id", "transport", "log_speedup")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_DIR_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    LOG_SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    target: str
    profile: LoadProfile
    workload: _workload_pb2.WorkloadSpec
    workload_endpoint: str
    records_dir: str
    run_id: str
    transport: str
    log_speedup: float
    def __init__(self, target: _Optional[str] = ..., profile: _Optional[_Union[LoadProfile, _Mapping]] = ..., workload: _Optional[_Union[_workload_pb2.WorkloadSpec, _Mapping]] = ..., workload_endpoint: _Optional[str] = ..., records_dir: _Optional[str] = ..., run_id: _Optional[str] = ..., transport: _Optional[str] = ..., log_speedup: _Optional[float] = ...) -> None: ...

class LatencyPercentiles(_message.Message):
    __slots__ = ("count", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    P999_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    def __init__(self, count: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., p999_ms: _Optional[float] = ..., max_ms: _Optional[float] = ..., mean_ms: _Optional[float] = ...) -> None: ...

class TickProgress(_message.Message):
    __slots__ = ("run_id", "tick", "target_rate_per_s", "sent", "completed", "errors", "not_sent", "in_flight", "p50_ms", "p90_ms", "p99_ms")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    TARGET_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    NOT_SENT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    tick: int
    target_rate_per_s: float
    sent: int
    completed: int
    errors: int
    not_sent: int
    in_flight: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    def __init__(self, run_id: _Optional[str] = ..., tick: _Optional[int] = ..., target_rate_per_s: _Optional[float] = ..., sent: _Optional[int] = ..., completed: _Optional[int] = ..., errors: _Optional[int] = ..., not_sent: _Optional[int] = ..., in_flight: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class LoadGenFootprint(_message.Message):
    __slots__ = ("cpu_s", "cpu_us_per_request", "cores_used", "core_budget", "over_core_budget", "send_lateness")
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    CPU_US_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CORES_USED_FIELD_NUMBER: _ClassVar[int]
    CORE_BUDGET_FIELD_NUMBER: _ClassVar[int]
    OVER_CORE_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEND_LATENESS_FIELD_NUMBER: _ClassVar[int]
    cpu_s: float
    cpu_us_per_request: float
    cores_used: float
    core_budget: float
    over_core_budget: bool
    send_lateness: LatencyPercentiles
    def __init__(self, cpu_s: _Optional[float] = ..., cpu_us_per_request: _Optional[float] = ..., cores_used: _Optional[float] = ..., core_budget: _Optional[float] = ..., over_core_budget: _Optional[bool] = ..., send_lateness: _Optional[_Union[LatencyPercentiles, _Mapping]] = ...) -> None: ...

class LoadSummary(_message.Message):
    __slots__ = ("run_id", "requests_sent", "requests_ok", "requests_failed", "errors_by_status", "requests_not_sent", "requests_offered", "duration_s", "achieved_rate_per_s", "achieved_hold_rate_per_s", "latency_from_intended", "latency_from_actual", "server_queue", "server_inference", "network_and_overhead", "mean_batch_size", "ticks", "records_dir", "transport", "footprint", "candidates_per_request")
    class ErrorsByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_SENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_OK_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_NOT_SENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_OFFERED_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_HOLD_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FROM_INTENDED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FROM_ACTUAL_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SERVER_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_AND_OVERHEAD_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_DIR_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    requests_sent: int
    requests_ok: int
    requests_failed: int
    errors_by_status: _containers.ScalarMap[str, int]
    requests_not_sent: int
    requests_offered: int
    duration_s: float
    achieved_rate_per_s: float
    achieved_hold_rate_per_s: float
    latency_from_intended: LatencyPercentiles
    latency_from_actual: LatencyPercentiles
    server_queue: LatencyPercentiles
    server_inference: LatencyPercentiles
    network_and_overhead: LatencyPercentiles
    mean_batch_size: float
    ticks: int
    records_dir: str
    transport: str
    footprint: LoadGenFootprint
    candidates_per_request: int
    def __init__(self, run_id: _Optional[str] = ..., requests_sent: _Optional[int] = ..., requests_ok: _Optional[int] = ..., requests_failed: _Optional[int] = ..., errors_by_status: _Optional[_Mapping[str, int]] = ..., requests_not_sent: _Optional[int] = ..., requests_offered: _Optional[int] = ..., duration_s: _Optional[float] = ..., achieved_rate_per_s: _Optional[float] = ..., achieved_hold_rate_per_s: _Optional[float] = ..., latency_from_intended: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., latency_from_actual: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., server_queue: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., server_inference: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., network_and_overhead: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., mean_batch_size: _Optional[float] = ..., ticks: _Optional[int] = ..., records_dir: _Optional[str] = ..., transport: _Optional[str] = ..., footprint: _Optional[_Union[LoadGenFootprint, _Mapping]] = ..., candidates_per_request: _Optional[int] = ...) -> None: ...

class RunUpdate(_message.Message):
    __slots__ = ("progress", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: TickProgress
    summary: LoadSummary
    def __init__(self, progress: _Optional[_Union[TickProgress, _Mapping]] = ..., summary: _Optional[_Union[LoadSummary, _Mapping]] = ...) -> None: ...
