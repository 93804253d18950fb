"""The controller as a platform: experiments' state lives in the result store, and a manager started
over it (a restarted controller) shows the finished ones, queues the queued ones again and marks
the ones cut off as interrupted. Over a local folder and a real fake-gcs-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.processes import ServiceStartError
from etude.services.controller.experiments import ExperimentManager
from etude.services.controller.runner import new_experiment
from etude.services.controller.server import ControllerServicer
from etude.services.controller.validation import resolve
from etude.services.results.started import StartedProcess, started_text
from etude.services.results.store import LocalResultStore, ResultStore, open_store, write_json
from gcs_emulator import fake_gcs_server, new_bucket

from etude.serving import ServiceHost
from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2, controller_pb2_grpc, experiment_pb2
from tests.controller.driver_fakes import ServicesNeverLost


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with fake_gcs_server() as url:
        yield url


@pytest.fixture(params=["local", "gcs"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the controller keeps its experiments; each open_store() is a fresh 'process'."""
    if request.param == "local":
        return str(tmp_path / "results")
    request.getfixturevalue("emulator")
    return f"gs://{new_bucket()}/platform"


def spec(name: str, models: int = 1) -> experiment_pb2.ExperimentSpec:
    return resolve(
        parse_spec_dict(
            {
                "name": name,
                "models": [{"name": "noop"}, {"name": "gru4rec"}, {"name": "narm"}][:models],
                "catalog_sizes": [100],
                "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
                "load": {"target_rate_per_s": 10, "ramp_duration_s": 1, "hold_duration_s": 1},
            }
        )
    )


class FakeDriver(ServicesNeverLost):
    """Deploys nothing: a trial 'deploys' until released, then fails to start (no processes)."""

    name = "fake"

    def __init__(self) -> None:
        self.deploying: asyncio.Queue[str] = asyncio.Queue()
        self.release = asyncio.Event()
        self.deployed: list[str] = []

    @asynccontextmanager
    async def inference_service(
        self, trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, log_dir: Path
    ) -> AsyncIterator[str]:
        self.deployed.append(trial.trial_id)
        self.deploying.put_nowait(trial.trial_id)
        await self.release.wait()
        raise ServiceStartError(f"{trial.trial_id}: not deployed in this test")
        yield ""  # pragma: no cover

    @asynccontextmanager
    async def loadgen_service(self, log_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        yield "127.0.0.1:9"

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        yield str(local_dir)


def store_experiment(
    store: ResultStore, name: str, state: int, trial_states: list[int], created_unix_ms: int
) -> controller_pb2.Experiment:
    """An experiment.json as a controller left it (for RUNNING: as a crash left it)."""
    experiment = new_experiment(spec(name, len(trial_states)), store)
    experiment.experiment_id = name
    experiment.created_unix_ms = created_unix_ms
    experiment.state = state  # type: ignore[assignment]
    for result, trial_state in zip(experiment.trials, trial_states, strict=True):
        result.state = trial_state  # type: ignore[assignment]
        if trial_state == experiment_pb2.TRIAL_STATE_SUCCEEDED:
            result.slo_met, result.slo_verdict = True, "p90 1 ms"
    write_json(store, f"{name}/experiment.json", _to_dict(experiment))
    return experiment


def _to_dict(experiment: controller_pb2.Experiment) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(experiment, preserving_proto_field_name=True)


async def finished(manager: ExperimentManager, experiment_id: str) -> controller_pb2.Experiment:
    """Waits (10 s at most) for the experiment's last event."""
    async with asyncio.timeout(10):
        async for event in manager.watch(experiment_id):
            if event.HasField("finished"):
                return event.finished
    return manager.get(experiment_id)


async def test_a_restarted_manager_lists_finished_marks_running_interrupted_and_requeues_queued(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    store_experiment(
        store, "done", controller_pb2.EXPERIMENT_STATE_SUCCEEDED, [experiment_pb2.TRIAL_STATE_SUCCEEDED], 1
    )
    store_experiment(
        store,
        "crashed",
        controller_pb2.EXPERIMENT_STATE_RUNNING,
        [
            experiment_pb2.TRIAL_STATE_SUCCEEDED,
            experiment_pb2.TRIAL_STATE_RUNNING,
            experiment_pb2.TRIAL_STATE_PENDING,
        ],
        2,
    )
    store_experiment(
        store, "waiting", controller_pb2.EXPERIMENT_STATE_QUEUED, [experiment_pb2.TRIAL_STATE_PENDING], 3
    )
    store.write_text("not-an-experiment/notes.txt", "a folder without experiment.json is skipped")
    store.write_text("garbled/experiment.json", "{not json")

    driver = FakeDriver()
    manager = ExperimentManager(driver, store=open_store(store_uri))
    await manager.start()
    try:
        assert [e.experiment_id for e in manager.list()] == ["done", "crashed", "waiting"]
        done = manager.get("done")
        assert done.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED
        assert done.trials[0].slo_verdict == "p90 1 ms"

        crashed = manager.get("crashed")
        assert crashed.state == controller_pb2.EXPERIMENT_STATE_INTERRUPTED
        assert "interrupted" in crashed.error
        assert [r.state for r in crashed.trials] == [
            experiment_pb2.TRIAL_STATE_SUCCEEDED,  # finished results are kept
            experiment_pb2.TRIAL_STATE_INTERRUPTED,
            experiment_pb2.TRIAL_STATE_CANCELLED,
        ]
        assert crashed.trials[0].slo_verdict == "p90 1 ms"
        assert "interrupted" in crashed.trials[1].error
        # Written back, so that the next restart finds it finished.
        assert '"EXPERIMENT_STATE_INTERRUPTED"' in store.read_text("crashed/experiment.json")
        assert store.exists("crashed/summary.md")

        # The queued one runs: its trial is being deployed, then fails (no services here).
        assert await asyncio.wait_for(driver.deploying.get(), 10) == "noop-c100-cpu-eager"
        assert manager.get("waiting").state == controller_pb2.EXPERIMENT_STATE_RUNNING
        driver.release.set()
        assert (await finished(manager, "waiting")).state == controller_pb2.EXPERIMENT_STATE_FAILED
        assert "not deployed in this test" in manager.get("waiting").trials[0].error
    finally:
        await manager.stop()

    # A second restart changes nothing: every experiment is finished now.
    again = ExperimentManager(FakeDriver(), store=open_store(store_uri))
    await again.start()
    try:
        states = {e.experiment_id: e.state for e in again.list()}
        assert states == {
            "done": controller_pb2.EXPERIMENT_STATE_SUCCEEDED,
            "crashed": controller_pb2.EXPERIMENT_STATE_INTERRUPTED,
            "waiting": controller_pb2.EXPERIMENT_STATE_FAILED,
        }
    finally:
        await again.stop()


async def test_a_stopped_manager_records_running_as_interrupted_and_keeps_queued_for_the_next(
    store_uri: str,
) -> None:
    driver = FakeDriver()
    manager = ExperimentManager(driver, store=open_store(store_uri))
    await manager.start()
    running = await manager.submit(spec("first", models=2))
    queued = await manager.submit(spec("second"))
    cancelled = await manager.submit(spec("third"))
    await asyncio.wait_for(driver.deploying.get(), 10)
    await manager.cancel(cancelled.experiment_id)
    await manager.stop()  # SIGTERM: the controller stops while "first" deploys its first trial

    assert running.state == controller_pb2.EXPERIMENT_STATE_INTERRUPTED
    assert [r.state for r in running.trials] == [
        experiment_pb2.TRIAL_STATE_INTERRUPTED,
        experiment_pb2.TRIAL_STATE_CANCELLED,
    ]
    assert queued.state == controller_pb2.EXPERIMENT_STATE_QUEUED
    # The submitted spec named no store: the controller's own is where everything went.
    assert running.results_uri == open_store(store_uri).uri(running.experiment_id)

    restarted_driver = FakeDriver()
    restarted = ExperimentManager(restarted_driver, store=open_store(store_uri))
    await restarted.start()
    try:
        assert restarted.get(running.experiment_id).state == controller_pb2.EXPERIMENT_STATE_INTERRUPTED
        assert restarted.get(cancelled.experiment_id).state == controller_pb2.EXPERIMENT_STATE_CANCELLED
        # Only the queued experiment runs again; the cancelled one does not.
        await asyncio.wait_for(restarted_driver.deploying.get(), 10)
        assert restarted.get(queued.experiment_id).state == controller_pb2.EXPERIMENT_STATE_RUNNING
        assert restarted_driver.deployed == [queued.trials[0].trial.trial_id]
    finally:
        await restarted.stop()


async def test_experiments_run_several_at_once_when_allowed(tmp_path: Path) -> None:
    driver = FakeDriver()
    manager = ExperimentManager(driver, store=LocalResultStore(tmp_path), max_concurrent_experiments=2)
    await manager.start()
    try:
        submitted = [await manager.submit(spec(name)) for name in ("a", "b", "c")]
        for _ in range(2):
            await asyncio.wait_for(driver.deploying.get(), 10)
        states = [experiment.state for experiment in submitted]
        assert states == [
            controller_pb2.EXPERIMENT_STATE_RUNNING,
            controller_pb2.EXPERIMENT_STATE_RUNNING,
            controller_pb2.EXPERIMENT_STATE_QUEUED,
        ]
        driver.release.set()
        for experiment in submitted:
            ended = await finished(manager, experiment.experiment_id)
            assert ended.state == controller_pb2.EXPERIMENT_STATE_FAILED
    finally:
        await manager.stop()


async def test_recovered_experiments_are_served_by_get_and_list(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    store_experiment(
        store, "done", controller_pb2.EXPERIMENT_STATE_SUCCEEDED, [experiment_pb2.TRIAL_STATE_SUCCEEDED], 1
    )
    store_experiment(
        store, "crashed", controller_pb2.EXPERIMENT_STATE_RUNNING, [experiment_pb2.TRIAL_STATE_DEPLOYING], 2
    )
    manager = ExperimentManager(FakeDriver(), store=store)
    await manager.start()
    host = ServiceHost(
        ["etude.v1.ControllerService"],
        lambda server: controller_pb2_grpc.add_ControllerServiceServicer_to_server(
            ControllerServicer(manager), server
        ),
    )
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = controller_pb2_grpc.ControllerServiceStub(channel)
            listed = await stub.ListExperiments(controller_pb2.ListExperimentsRequest())
            # Newest first, as ListExperiments pages them.
            assert [e.experiment_id for e in listed.experiments] == ["crashed", "done"]
            assert listed.experiments[0].state == controller_pb2.EXPERIMENT_STATE_INTERRUPTED
            got = await stub.GetExperiment(controller_pb2.GetExperimentRequest(experiment_id="crashed"))
            assert got.state == controller_pb2.EXPERIMENT_STATE_INTERRUPTED
            assert got.trials[0].state == experiment_pb2.TRIAL_STATE_INTERRUPTED
            # Watching a recovered experiment ends at once with its final state.
            events = [
                event
                async for event in stub.WatchExperiment(
                    controller_pb2.WatchExperimentRequest(experiment_id="done")
                )
            ]
            assert [event.finished.state for event in events] == [controller_pb2.EXPERIMENT_STATE_SUCCEEDED]
    finally:
        await manager.stop()
        await host.stop(0)


class CannotCleanUp(FakeDriver):
    """A driver whose clean-up fails (an API that refuses, say); remembers what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, list[object]]] = []

    async def stop_leftovers(self, experiment_id: str, started: list[object]) -> list[str]:
        self.asked.append((experiment_id, started))
        raise RuntimeError("the API refused the list call")


async def test_a_cut_off_experiment_is_interrupted_and_reported_even_when_its_clean_up_fails(
    tmp_path: Path,
) -> None:
    store = LocalResultStore(tmp_path)
    store_experiment(
        store,
        "crashed",
        controller_pb2.EXPERIMENT_STATE_RUNNING,
        [experiment_pb2.TRIAL_STATE_SUCCEEDED, experiment_pb2.TRIAL_STATE_RUNNING],
        1,
    )
    recorded = StartedProcess("loadgen", 4_000_000, "boot", 42)
    store.write_text("crashed/started.json", started_text([recorded]))
    driver = CannotCleanUp()
    manager = ExperimentManager(driver, store=store)
    await manager.start()
    await manager.stop()
    assert driver.asked == [("crashed", [recorded])]
    assert manager.get("crashed").state == controller_pb2.EXPERIMENT_STATE_INTERRUPTED
    assert store.exists("crashed/report.md")
