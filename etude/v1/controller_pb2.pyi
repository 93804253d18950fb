from etude.v1 import environment_pb2 as _environment_pb2
from etude.v1 import experiment_pb2 as _experiment_pb2
from etude.v1 import loadgen_pb2 as _loadgen_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_QUEUED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_SUCCEEDED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_FAILED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_CANCELLED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_INTERRUPTED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_VALIDATED: _ClassVar[ExperimentState]
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_QUEUED: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_SUCCEEDED: ExperimentState
EXPERIMENT_STATE_FAILED: ExperimentState
EXPERIMENT_STATE_CANCELLED: ExperimentState
EXPERIMENT_STATE_INTERRUPTED: ExperimentState
EXPERIMENT_STATE_VALIDATED: ExperimentState

class Experiment(_message.Message):
    __slots__ = ("experiment_id", "state", "spec", "trials", "results_uri", "error", "created_unix_ms", "finished_unix_ms", "environment", "estimated_load_s")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_URI_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_LOAD_S_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    state: ExperimentState
    spec: _experiment_pb2.ExperimentSpec
    trials: _containers.RepeatedCompositeFieldContainer[_experiment_pb2.TrialResult]
    results_uri: str
    error: str
    created_unix_ms: int
    finished_unix_ms: int
    environment: _environment_pb2.Environment
    estimated_load_s: int
    def __init__(self, experiment_id: _Optional[str] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., spec: _Optional[_Union[_experiment_pb2.ExperimentSpec, _Mapping]] = ..., trials: _Optional[_Iterable[_Union[_experiment_pb2.TrialResult, _Mapping]]] = ..., results_uri: _Optional[str] = ..., error: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., environment: _Optional[_Union[_environment_pb2.Environment, _Mapping]] = ..., estimated_load_s: _Optional[int] = ...) -> None: ...

class SubmitExperimentRequest(_message.Message):
    __slots__ = ("spec", "validate_only")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    spec: _experiment_pb2.ExperimentSpec
    validate_only: bool
    def __init__(self, spec: _Optional[_Union[_experiment_pb2.ExperimentSpec, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class WatchExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class ExperimentEvent(_message.Message):
    __slots__ = ("experiment_id", "trial", "progress", "finished")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    trial: _experiment_pb2.TrialResult
    progress: _loadgen_pb2.TickProgress
    finished: Experiment
    def __init__(self, experiment_id: _Optional[str] = ..., trial: _Optional[_Union[_experiment_pb2.TrialResult, _Mapping]] = ..., progress: _Optional[_Union[_loadgen_pb2.TickProgress, _Mapping]] = ..., finished: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[ExperimentSummary]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[ExperimentSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExperimentSummary(_message.Message):
    __slots__ = ("experiment_id", "name", "state", "created_unix_ms", "finished_unix_ms", "trials", "trials_measured", "trials_slo_met", "trials_failed", "cheapest_trial_id", "cheapest_hardware", "cheapest_monthly_cost_usd", "error", "results_uri")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    TRIALS_MEASURED_FIELD_NUMBER: _ClassVar[int]
    TRIALS_SLO_MET_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FAILED_FIELD_NUMBER: _ClassVar[int]
    CHEAPEST_TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    CHEAPEST_HARDWARE_FIELD_NUMBER: _ClassVar[int]
    CHEAPEST_MONTHLY_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULTS_URI_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    name: str
    state: ExperimentState
    created_unix_ms: int
    finished_unix_ms: int
    trials: int
    trials_measured: int
    trials_slo_met: int
    trials_failed: int
    cheapest_trial_id: str
    cheapest_hardware: str
    cheapest_monthly_cost_usd: float
    error: str
    results_uri: str
    def __init__(self, experiment_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., created_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., trials: _Optional[int] = ..., trials_measured: _Optional[int] = ..., trials_slo_met: _Optional[int] = ..., trials_failed: _Optional[int] = ..., cheapest_trial_id: _Optional[str] = ..., cheapest_hardware: _Optional[str] = ..., cheapest_monthly_cost_usd: _Optional[float] = ..., error: _Optional[str] = ..., results_uri: _Optional[str] = ...) -> None: ...

class CancelExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...
