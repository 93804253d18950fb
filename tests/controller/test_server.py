"""ControllerService through a real server on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.experiments import ExperimentManager
from etude.services.controller.server import ControllerServicer
from etude.services.results.store import LocalResultStore

from etude.serving import ServiceHost
from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2, controller_pb2_grpc, experiment_pb2


def tiny_spec(results: Path, hold_duration_s: int = 1) -> experiment_pb2.ExperimentSpec:
    return parse_spec_dict(
        {
            "name": "api",
            "models": [{"name": "noop"}],
            "catalog_sizes": [100],
            "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
            "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": hold_duration_s},
            "results": str(results),
        }
    )


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[controller_pb2_grpc.ControllerServiceStub]:
    manager = ExperimentManager(LocalDriver(startup_timeout_s=120), LocalResultStore)
    await manager.start()
    host = ServiceHost(
        ["etude.v1.ControllerService"],
        lambda server: controller_pb2_grpc.add_ControllerServiceServicer_to_server(
            ControllerServicer(manager), server
        ),
    )
    port = await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield controller_pb2_grpc.ControllerServiceStub(channel)
    await manager.stop()
    await host.stop(0)


async def test_invalid_spec_is_rejected_naming_the_field(controller, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    spec.load.target_rate_per_s = -5
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await controller.SubmitExperiment(controller_pb2.SubmitExperimentRequest(spec=spec))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.load.target_rate_per_s" in error.value.details()
    listed = await controller.ListExperiments(controller_pb2.ListExperimentsRequest())
    assert not listed.experiments


async def test_validate_only_answers_the_trial_matrix_and_creates_nothing(controller, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "results")
    spec.models.add(name="gru4rec")
    spec.catalog_sizes.append(1000)
    validated = await controller.SubmitExperiment(
        controller_pb2.SubmitExperimentRequest(spec=spec, validate_only=True)
    )
    assert validated.state == controller_pb2.EXPERIMENT_STATE_VALIDATED
    assert not validated.experiment_id and not validated.results_uri and not validated.created_unix_ms
    assert [result.trial.trial_id for result in validated.trials] == [
        "noop-c100-cpu-eager",
        "gru4rec-c100-cpu-eager",
        "noop-c1000-cpu-eager",
        "gru4rec-c1000-cpu-eager",
    ]
    assert all(result.state == experiment_pb2.TRIAL_STATE_PENDING for result in validated.trials)
    assert validated.estimated_load_s == 4 * (1 + 1)
    # The resolved spec: every default explicit, as a submission would store it.
    assert validated.spec.batching.max_batch_size == 1024 and validated.spec.slo.rate_per_s == 20
    listed = await controller.ListExperiments(controller_pb2.ListExperimentsRequest())
    assert not listed.experiments
    assert not (tmp_path / "results").exists()


async def test_validate_only_refuses_an_invalid_spec_naming_the_field(controller, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    spec.hardware.add(name="cpu", device="tpu")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await controller.SubmitExperiment(
            controller_pb2.SubmitExperimentRequest(spec=spec, validate_only=True)
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.hardware[0].device" in error.value.details()


@pytest.mark.parametrize("method", ["GetExperiment", "CancelExperiment"])
async def test_unknown_experiment_is_not_found(controller, method: str) -> None:
    request_type = getattr(controller_pb2, f"{method}Request")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await getattr(controller, method)(request_type(experiment_id="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "experiment_id" in error.value.details()


async def test_empty_experiment_id_is_invalid(controller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in controller.WatchExperiment(controller_pb2.WatchExperimentRequest()):
            pass
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
async def test_submitted_experiment_runs_and_is_watched_to_the_end(controller, tmp_path: Path) -> None:
    submitted = await controller.SubmitExperiment(
        controller_pb2.SubmitExperimentRequest(spec=tiny_spec(tmp_path))
    )
    assert submitted.state == controller_pb2.EXPERIMENT_STATE_QUEUED
    assert [r.trial.trial_id for r in submitted.trials] == ["noop-c100-cpu-eager"]

    events = [
        event
        async for event in controller.WatchExperiment(
            controller_pb2.WatchExperimentRequest(experiment_id=submitted.experiment_id)
        )
    ]
    assert events[-1].HasField("finished")
    assert any(event.HasField("progress") for event in events)
    finished = await controller.GetExperiment(
        controller_pb2.GetExperimentRequest(experiment_id=submitted.experiment_id)
    )
    assert finished.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, finished.error
    assert finished.trials[0].summary.requests_ok > 0
    assert (tmp_path / submitted.experiment_id / "summary.md").exists()


async def test_a_search_validated_counts_its_probes_in_the_estimate(controller, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    spec.search.max_probes = 3
    validated = await controller.SubmitExperiment(
        controller_pb2.SubmitExperimentRequest(spec=spec, validate_only=True)
    )
    assert validated.spec.search.start_rate_per_s == 20 and validated.spec.search.max_rate_per_s == 64 * 20
    assert validated.estimated_load_s == 1 * 3 * (1 + 1)
    spec.search.precision = 0.9
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await controller.SubmitExperiment(controller_pb2.SubmitExperimentRequest(spec=spec))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.search.precision" in error.value.details() and "(0, 0.5]" in error.value.details()


@pytest.mark.slow
async def test_a_submitted_spec_with_search_settings_runs_the_search(controller, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    spec.load.ramp_duration_s, spec.load.hold_duration_s = 0, 1
    spec.search.start_rate_per_s, spec.search.max_rate_per_s, spec.search.max_probes = 20, 40, 3
    submitted = await controller.SubmitExperiment(controller_pb2.SubmitExperimentRequest(spec=spec))
    events = [
        event
        async for event in controller.WatchExperiment(
            controller_pb2.WatchExperimentRequest(experiment_id=submitted.experiment_id)
        )
    ]
    finished = events[-1].finished
    assert finished.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, finished.error
    (result,) = finished.trials
    # The noop model sustains both rates: the search doubles once and stops at its ceiling.
    assert [(probe.rate_per_s, probe.slo_met) for probe in result.probes] == [(20, True), (40, True)]
    assert result.max_sustained_rate_per_s == 40 and "sustains 40 req/s" in result.slo_verdict
    trial_dir = tmp_path / submitted.experiment_id / "trials" / result.trial.trial_id
    assert sorted(path.name for path in (trial_dir / "probes").iterdir()) == ["01-20", "02-40"]
    stored = (trial_dir / "trial.json").read_text()
    assert '"max_sustained_rate_per_s": 40.0' in stored


@pytest.mark.slow
async def test_cancelling_a_running_experiment_keeps_what_was_recorded(controller, tmp_path: Path) -> None:
    submitted = await controller.SubmitExperiment(
        controller_pb2.SubmitExperimentRequest(spec=tiny_spec(tmp_path, hold_duration_s=60))
    )
    request = controller_pb2.WatchExperimentRequest(experiment_id=submitted.experiment_id)
    async for event in controller.WatchExperiment(request):
        if event.HasField("progress"):
            break
    cancelled = await controller.CancelExperiment(
        controller_pb2.CancelExperimentRequest(experiment_id=submitted.experiment_id)
    )
    assert cancelled.state == controller_pb2.EXPERIMENT_STATE_CANCELLED
    assert cancelled.trials[0].state == experiment_pb2.TRIAL_STATE_CANCELLED
    trial_dir = tmp_path / submitted.experiment_id / "trials" / "noop-c100-cpu-eager"
    assert (trial_dir / "trial.json").exists()
    assert (trial_dir / "summary.json").exists()
    assert (trial_dir / "records.csv").stat().st_size > 0
