"""A trial whose service dies is FAILED with the reason, its records kept, and the next trial
runs on fresh services: real processes, killed for real."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2, experiment_pb2

State = experiment_pb2.TrialState


def _spec(results: Path) -> experiment_pb2.ExperimentSpec:
    return resolve(
        parse_spec_dict(
            {
                "name": "loss",
                "models": [{"name": "noop"}, {"name": "gru4rec"}],
                "catalog_sizes": [500],
                "runtimes": ["eager"],
                "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
                "load": {"target_rate_per_s": 50, "ramp_duration_s": 1, "hold_duration_s": 8},
                "results": str(results),
            }
        )
    )


async def _run_killing(tmp_path: Path, victim: str) -> controller_pb2.Experiment:
    """Runs two trials; during the first one's third second of load, SIGKILLs its `victim`."""
    driver = LocalDriver(startup_timeout_s=120)
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(_spec(tmp_path), store)
    killed: list[int] = []

    def on_event(event: controller_pb2.ExperimentEvent) -> None:
        if event.HasField("progress") and event.progress.tick >= 2 and not killed:
            pid = next(pid for service, pid in driver.running() if service == victim)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    await ExperimentRunner(experiment, driver, store, on_event).run()
    assert killed
    return experiment


async def test_a_killed_inference_service_fails_its_trial_with_the_signal_and_keeps_its_records(
    tmp_path: Path,
) -> None:
    experiment = await _run_killing(tmp_path, "inference")
    first, second = experiment.trials
    assert first.state == State.TRIAL_STATE_FAILED
    assert "inference service was killed by SIGKILL" in first.error
    records = tmp_path / experiment.experiment_id / "trials" / first.trial.trial_id / "records.csv"
    assert len(records.read_text().splitlines()) > 1  # what ran until the loss stays
    # The next trial deploys its own service and runs.
    assert second.state == State.TRIAL_STATE_SUCCEEDED
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_FAILED
    assert first.trial.trial_id in experiment.error


async def test_a_killed_load_generator_fails_its_trial_and_is_replaced_for_the_next(tmp_path: Path) -> None:
    experiment = await _run_killing(tmp_path, "loadgen")
    first, second = experiment.trials
    assert first.state == State.TRIAL_STATE_FAILED
    assert "loadgen service was killed by SIGKILL" in first.error
    assert second.state == State.TRIAL_STATE_SUCCEEDED, second.error
    assert second.summary.requests_ok > 0
