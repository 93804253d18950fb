"""A result store that fills up: a write fails cleanly (no temporary file left), a state file is
still brought up to date where its own blocks allow, and an experiment whose results cannot be
written ends FAILED with the reason, never left RUNNING. The fault is injected at the store's
file writes (a real small file system needs root to mount)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.drivers.processes import ServiceStartError
from etude.services.controller.experiments import ExperimentManager
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.server import ControllerServicer
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude.serving import ServiceHost
from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2, controller_pb2_grpc, experiment_pb2
from tests.controller.driver_fakes import ServicesNeverLost

State = experiment_pb2.TrialState


class FillingDisk(LocalResultStore):
    """A local store on a disk that fills when told: a new file then gets half its text written
    and ENOSPC, as a real full disk does; rewriting a file in place works while `room_in_place`."""

    def __init__(self, root: Path, room_in_place: bool = True) -> None:
        super().__init__(root)
        self.full = False
        self.room_in_place = room_in_place

    def _write_new(self, path: Path, text: str) -> None:
        if self.full:
            path.write_text(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        super()._write_new(path, text)

    def _overwrite(self, path: Path, text: str) -> None:
        if not self.room_in_place:
            path.write_text("")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        super()._overwrite(path, text)


def _spec(results: Path, models: int = 1) -> experiment_pb2.ExperimentSpec:
    return resolve(
        parse_spec_dict(
            {
                "name": "full",
                "models": [{"name": "noop"}, {"name": "gru4rec"}][:models],
                "catalog_sizes": [100],
                "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
                "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 2},
                "results": str(results),
            }
        )
    )


def _temporary_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp"))


def test_a_write_on_a_full_disk_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FillingDisk(tmp_path)
    store.write_text("a/new.json", "{}\n")
    store.full = True
    with pytest.raises(OSError) as error:
        store.write_text("a/other.json", "{}\n")
    assert error.value.errno == errno.ENOSPC
    assert not store.exists("a/other.json")
    assert _temporary_files(tmp_path) == []


def test_on_a_full_disk_an_existing_state_file_is_rewritten_in_place(tmp_path: Path) -> None:
    store = FillingDisk(tmp_path)
    store.write_text("e/experiment.json", '{"state": "EXPERIMENT_STATE_RUNNING"}\n')
    store.full = True
    store.write_text("e/experiment.json", '{"state": "EXPERIMENT_STATE_FAILED"}\n')
    assert store.read_text("e/experiment.json") == '{"state": "EXPERIMENT_STATE_FAILED"}\n'
    assert _temporary_files(tmp_path) == []


async def test_a_disk_that_fills_during_a_trial_fails_it_and_the_experiment_with_the_reason(
    tmp_path: Path,
) -> None:
    store = FillingDisk(tmp_path)
    experiment = new_experiment(_spec(tmp_path, models=2), store)
    finished: list[controller_pb2.Experiment] = []

    def on_event(event: controller_pb2.ExperimentEvent) -> None:
        if event.HasField("progress"):
            store.full = True  # the disk fills while the first trial's load runs
        if event.HasField("finished"):
            finished.append(event.finished)

    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store, on_event).run()

    first, second = experiment.trials
    assert first.state == State.TRIAL_STATE_FAILED
    assert "No space left on device" in first.error and "trial.json" in first.error
    # A full disk will not empty itself: the next trial is not run into it.
    assert second.state == State.TRIAL_STATE_CANCELLED
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_FAILED
    assert "No space left on device" in experiment.error
    assert finished and finished[0].state == controller_pb2.EXPERIMENT_STATE_FAILED
    stored = json.loads((tmp_path / experiment.experiment_id / "experiment.json").read_text())
    assert stored["state"] == "EXPERIMENT_STATE_FAILED"
    assert _temporary_files(tmp_path) == []


class FillsTheDiskAtDeploy(ServicesNeverLost):
    """Starts no process: the disk fills as the trial deploys, and the deployment fails."""

    name = "fake"

    def __init__(self, store: FillingDisk) -> None:
        self.store = store

    @asynccontextmanager
    async def inference_service(
        self, trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, log_dir: Path
    ) -> AsyncIterator[str]:
        self.store.full = True
        raise ServiceStartError("inference service exited with status 1")
        yield ""  # pragma: no cover

    @asynccontextmanager
    async def loadgen_service(self, log_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        yield "127.0.0.1:9"

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        yield str(local_dir)


async def test_when_nothing_can_be_written_the_experiment_still_ends_failed_and_is_announced(
    tmp_path: Path,
) -> None:
    store = FillingDisk(tmp_path, room_in_place=False)
    experiment = new_experiment(_spec(tmp_path), store)
    finished: list[controller_pb2.Experiment] = []

    def on_event(event: controller_pb2.ExperimentEvent) -> None:
        if event.HasField("finished"):
            finished.append(event.finished)

    await ExperimentRunner(experiment, FillsTheDiskAtDeploy(store), store, on_event).run()

    (trial,) = experiment.trials
    # The trial keeps its own reason; the experiment says why nothing more was kept.
    assert trial.state == State.TRIAL_STATE_FAILED
    assert trial.error.startswith("ServiceStartError: inference service exited")
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_FAILED
    assert "No space left on device" in experiment.error
    assert [e.state for e in finished] == [controller_pb2.EXPERIMENT_STATE_FAILED]
    assert _temporary_files(tmp_path) == []


async def test_a_controller_whose_store_is_full_refuses_a_submission_as_resource_exhausted(
    tmp_path: Path,
) -> None:
    store = FillingDisk(tmp_path)
    manager = ExperimentManager(FillsTheDiskAtDeploy(store), store=store)
    await manager.start()
    host = ServiceHost(
        ["etude.v1.ControllerService"],
        lambda server: controller_pb2_grpc.add_ControllerServiceServicer_to_server(
            ControllerServicer(manager), server
        ),
    )
    port = await host.start()
    store.full = True
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = controller_pb2_grpc.ControllerServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.SubmitExperiment(controller_pb2.SubmitExperimentRequest(spec=_spec(tmp_path)))
            listed = await stub.ListExperiments(controller_pb2.ListExperimentsRequest())
    finally:
        await manager.stop()
        await host.stop(0)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "No space left on device" in error.value.details()
    assert not listed.experiments
    assert _temporary_files(tmp_path) == []
