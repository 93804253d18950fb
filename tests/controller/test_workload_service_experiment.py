"""Every experiment runs the workload service: the load generators stream their sessions from a
real child process, which starts with the experiment and stops with it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude.spec import parse_spec_text
from etude.v1 import controller_pb2, experiment_pb2

pytestmark = pytest.mark.slow

SPEC = """
name: workload-service
models: [{name: noop}]
catalog_sizes: [1000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 3}
load: {target_rate_per_s: 30, ramp_duration_s: 1, hold_duration_s: 2}
slo: {percentile: 90, latency_ms: 500}
"""


def _log_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_synthetic_experiment_streams_from_a_workload_process_it_starts_and_stops(
    tmp_path: Path,
) -> None:
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(resolve(parse_spec_text(SPEC)), store)
    driver = LocalDriver(startup_timeout_s=120)
    serving: list[tuple[str, int]] = []

    def on_event(event: controller_pb2.ExperimentEvent) -> None:
        if event.HasField("trial") and event.trial.state == experiment_pb2.TRIAL_STATE_RUNNING:
            serving.extend(driver.running())

    await ExperimentRunner(experiment, driver, store, on_event).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    workload_pids = [pid for service, pid in serving if service == "workload"]
    assert len(workload_pids) == 1
    assert {service for service, _ in serving} == {"workload", "loadgen", "inference"}
    assert not _alive(workload_pids[0])
    assert driver.running() == []

    events = _log_events(tmp_path / experiment.experiment_id / "logs" / "workload.log")
    started = [event for event in events if event.get("event") == "stream_started"]
    ended = [event for event in events if event.get("event") == "stream_ended"]
    # One stream per trial, for the trial's catalog and statistics, ended when the load did.
    assert len(started) == len(ended) == 1
    assert started[0]["catalog_size"] == 1000 and started[0]["seed"] == 3
    assert int(ended[0]["clicks"]) >= experiment.trials[0].summary.requests_sent > 0
