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
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class CancelExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...
