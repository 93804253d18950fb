"""Hostile and absurd requests for every RPC of every service: random field values, extreme
numbers, NaN and infinities, huge and empty repeated fields. Each gets a well-formed status (never
UNKNOWN or INTERNAL: a crash dressed as an answer) and the server stays SERVING.

Addresses in requests that make a service connect somewhere are pinned to loopback, and file
paths to this test's folder: a fuzzer must not aim traffic or writes anywhere else.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etude.v1 import (
    controller_pb2,
    controller_pb2_grpc,
    experiment_pb2,
    loadgen_pb2,
    loadgen_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    workload_pb2,
    workload_pb2_grpc,
)

pytestmark = pytest.mark.slow

CRASHES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_INT_EXTREMES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[object]:
    if field.type in _INT_EXTREMES:
        low, high = _INT_EXTREMES[field.type]
        small = st.integers(max(low, -3), 1_100)
        return st.one_of(small, st.sampled_from([low, high, 0, 1, 10**9]), st.integers(low, high))
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        extremes = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e300, -1e-300, 3.4e38])
        return st.one_of(st.floats(-1e3, 1e4), extremes)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_STRING:
        odd = st.sampled_from(["", "noop", "gru4rec", "x" * 5_000, "../../etc"])
        return st.one_of(st.text(max_size=30), odd)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([value.number for value in field.enum_type.values])
    raise AssertionError(f"no strategy for {field.full_name}")


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, object]]:
    """Field values for a message of `descriptor`: each field present or not, repeated fields
    from empty to large, nested messages a few levels deep."""
    fields: dict[str, st.SearchStrategy[object]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry or depth >= 3:
                continue
            value = messages(field.message_type, depth + 1)
        else:
            value = _scalar(field)
        if field.is_repeated:
            value = st.one_of(st.lists(value, max_size=4), st.lists(value, min_size=1_500, max_size=1_500))
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                value = st.lists(messages(field.message_type, depth + 1), max_size=3)
        fields[field.name] = st.one_of(st.none(), value)
    present = st.fixed_dictionaries(fields)
    return present.map(lambda values: {name: value for name, value in values.items() if value is not None})


def build(message_type: type[Message], values: dict[str, object]) -> Message:
    message = message_type()
    _fill(message, values)
    return message


def _fill(message: Message, values: dict[str, object]) -> None:
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.containing_oneof is not None and message.WhichOneof(field.containing_oneof.name):
            continue  # one member of a oneof is enough
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for item in value:  # type: ignore[attr-defined]
                    _fill(getattr(message, name).add(), item)
            else:
                _fill(getattr(message, name), value)  # type: ignore[arg-type]
                getattr(message, name).SetInParent()
        elif field.is_repeated:
            getattr(message, name).extend(value)  # type: ignore[arg-type]
        else:
            setattr(message, name, value)


class Served:
    """A real `etude serve SERVICE` process on a loopback port for a whole module of examples."""

    def __init__(self, service: str, flags: list[str], folder: Path) -> None:
        port_file = folder / f"{service}.port"
        self.log = folder / f"{service}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "etude.services.cli", "serve", service, "--port", "0",
                 "--port-file", str(port_file), *flags],
                stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while not port_file.exists():
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.05)
        self.endpoint = f"127.0.0.1:{port_file.read_text()}"
        self.channel = grpc.insecure_channel(self.endpoint)
        grpc.channel_ready_future(self.channel).result(timeout=60)

    def assert_serving(self) -> None:
        assert self.process.poll() is None, "the server died: " + self.log.read_text()[-3000:]
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self.channel.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _served(service: str, flags: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(service, flags, tmp_path_factory.mktemp(service))
    try:
        yield served
    finally:
        served.close()


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _served("workload", [], tmp_path_factory)


@pytest.fixture(scope="module")
def inference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _served("inference", ["--model", "gru4rec", "--catalog-size", "1000"], tmp_path_factory)


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _served("loadgen", [], tmp_path_factory)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    results = tmp_path_factory.mktemp("controller-results")
    yield from _served("controller", ["--results", str(results)], tmp_path_factory)


def _status_of(call: object, streaming: bool = True) -> grpc.StatusCode:
    try:
        if streaming:
            for _ in range(2):  # a stream's first answers, then hang up
                next(call)  # type: ignore[call-overload]
            call.cancel()  # type: ignore[attr-defined]
        else:
            call.result()  # type: ignore[attr-defined]
    except StopIteration:
        pass
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK


def _assert_well_formed(status: grpc.StatusCode, served: Served, request: Message) -> None:
    assert status not in CRASHES, f"{status} for {request}"[:2000]
    served.assert_serving()


@FUZZ
@given(values=messages(workload_pb2.WorkloadSpec.DESCRIPTOR))
def test_stream_sessions_survives_any_spec(workload: Served, values: dict[str, object]) -> None:
    request = build(workload_pb2.WorkloadSpec, values)
    call = workload_pb2_grpc.WorkloadServiceStub(workload.channel).StreamSessions(request, timeout=30)
    _assert_well_formed(_status_of(call), workload, request)


@FUZZ
@given(values=messages(recommender_pb2.RecommendRequest.DESCRIPTOR))
def test_recommend_survives_any_request(inference: Served, values: dict[str, object]) -> None:
    request = build(recommender_pb2.RecommendRequest, values)
    stub = recommender_pb2_grpc.RecommenderServiceStub(inference.channel)
    call = stub.Recommend.future(request, timeout=30)
    _assert_well_formed(_status_of(call, streaming=False), inference, request)


@FUZZ
@given(requests=st.lists(messages(recommender_pb2.RecommendRequest.DESCRIPTOR), min_size=0, max_size=4))
def test_recommend_stream_survives_any_requests(inference: Served, requests: list[dict[str, object]]) -> None:
    built = [build(recommender_pb2.RecommendRequest, values) for values in requests]
    stub = recommender_pb2_grpc.RecommenderServiceStub(inference.channel)
    call = stub.RecommendStream(iter(built), timeout=30)
    status = _status_of(call)
    assert status not in CRASHES, f"{status} for {built}"[:2000]
    inference.assert_serving()


def test_get_model_info_answers(inference: Served) -> None:
    info = recommender_pb2_grpc.RecommenderServiceStub(inference.channel).GetModelInfo(
        recommender_pb2.GetModelInfoRequest(), timeout=30
    )
    assert info.catalog_size == 1000


def _safe_load_spec(values: dict[str, object], inference_endpoint: str, folder: Path) -> loadgen_pb2.LoadSpec:
    request = build(loadgen_pb2.LoadSpec, values)
    # Only loopback: the noop-like inference under test, or nothing.
    request.target = inference_endpoint if request.target else ""
    request.workload_endpoint = ""
    request.records_dir = str(folder) if request.records_dir else ""
    return request  # type: ignore[return-value]


@FUZZ
@given(values=messages(loadgen_pb2.LoadSpec.DESCRIPTOR))
def test_loadgen_run_survives_any_spec(
    loadgen: Served, inference: Served, tmp_path_factory: pytest.TempPathFactory, values: dict[str, object]
) -> None:
    request = _safe_load_spec(values, inference.endpoint, tmp_path_factory.mktemp("records"))
    call = loadgen_pb2_grpc.LoadGeneratorServiceStub(loadgen.channel).Run(request, timeout=30)
    _assert_well_formed(_status_of(call), loadgen, request)


@FUZZ
@given(values=messages(experiment_pb2.ExperimentSpec.DESCRIPTOR))
def test_submit_survives_any_spec(
    controller: Served, tmp_path_factory: pytest.TempPathFactory, values: dict[str, object]
) -> None:
    spec = build(experiment_pb2.ExperimentSpec, values)
    spec.results = ""  # the controller's own store, never a path from the fuzzer
    spec.target = "local" if spec.target else ""
    stub = controller_pb2_grpc.ControllerServiceStub(controller.channel)
    try:
        accepted = stub.SubmitExperiment(controller_pb2.SubmitExperimentRequest(spec=spec), timeout=30)
    except grpc.RpcError as error:
        _assert_well_formed(error.code(), controller, spec)  # type: ignore[attr-defined]
        return
    # A spec that happens to be valid would run: stop it at once.
    cancel = controller_pb2.CancelExperimentRequest(experiment_id=accepted.experiment_id)
    stub.CancelExperiment(cancel, timeout=60)
    controller.assert_serving()


@FUZZ
@given(experiment_id=st.one_of(st.text(max_size=50), st.sampled_from(["", "../..", "x" * 10_000])))
def test_experiment_lookups_survive_any_id(controller: Served, experiment_id: str) -> None:
    stub = controller_pb2_grpc.ControllerServiceStub(controller.channel)
    get = controller_pb2.GetExperimentRequest(experiment_id=experiment_id)
    cancel = controller_pb2.CancelExperimentRequest(experiment_id=experiment_id)
    watch = controller_pb2.WatchExperimentRequest(experiment_id=experiment_id)
    calls = (
        (lambda: stub.GetExperiment.future(get, timeout=30), False),
        (lambda: stub.CancelExperiment.future(cancel, timeout=30), False),
        (lambda: stub.WatchExperiment(watch, timeout=30), True),
    )
    for start, streaming in calls:
        call = start()
        status = _status_of(call, streaming)
        assert status not in CRASHES, f"{status} for {experiment_id!r}"
    stub.ListExperiments(controller_pb2.ListExperimentsRequest(), timeout=30)
    controller.assert_serving()
