"""A tiny experiment through the local driver: real child processes, real gRPC, real files."""

from __future__ import annotations

import csv
import json
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
name: e2e
models: [{name: noop}, {name: gru4rec}]
catalog_sizes: [1000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 3}
runtimes: [jit]
load: {target_rate_per_s: 40, ramp_duration_s: 2, hold_duration_s: 2, k: 10}
slo: {percentile: 90, latency_ms: 500}
"""


async def test_tiny_experiment_leaves_consistent_records_and_summaries(tmp_path: Path) -> None:
    spec = resolve(parse_spec_text(SPEC))
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(spec, store)
    events: list[controller_pb2.ExperimentEvent] = []
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store, events.append).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    root = tmp_path / experiment.experiment_id
    stored_spec = json.loads((root / "spec.json").read_text())
    assert stored_spec["load"]["target_rate_per_s"] == 40
    assert json.loads((root / "experiment.json").read_text())["state"] == "EXPERIMENT_STATE_SUCCEEDED"
    assert "gru4rec-c1000-cpu-jit" in (root / "summary.md").read_text()

    assert [r.trial.trial_id for r in experiment.trials] == ["noop-c1000-cpu-jit", "gru4rec-c1000-cpu-jit"]
    for result in experiment.trials:
        assert result.state == experiment_pb2.TRIAL_STATE_SUCCEEDED, result.error
        summary = result.summary
        trial_dir = root / "trials" / result.trial.trial_id
        with (trial_dir / "records.csv").open(newline="") as handle:
            records = list(csv.DictReader(handle))
        with (trial_dir / "series.csv").open(newline="") as handle:
            series = list(csv.DictReader(handle))
        stored = json.loads((trial_dir / "trial.json").read_text())
        loadgen_summary = json.loads((trial_dir / "summary.json").read_text())

        # Counts add up: every request sent is one record, and every one was answered.
        assert summary.requests_sent == len(records) > 0
        assert summary.requests_ok + summary.requests_failed == summary.requests_sent
        assert summary.requests_failed == 0 and not summary.errors_by_status
        assert all(record["status"] == "OK" for record in records)
        assert summary.requests_sent + summary.requests_not_sent <= summary.requests_offered
        assert len(series) == 4
        assert sum(int(row["sent"]) for row in series) == summary.requests_sent
        # Ramp 2 s to 40/s then hold 2 s: the generator offered what the ramp called for.
        assert summary.requests_offered == pytest.approx(20 + 40 + 40 + 40, abs=25)

        # The latency split is present and consistent with the end-to-end latency.
        assert summary.latency_from_intended.count == summary.requests_ok
        assert summary.latency_from_intended.p50_ms >= summary.latency_from_actual.p50_ms * 0.99
        assert summary.server_inference.count == summary.requests_ok
        assert summary.server_queue.count == summary.requests_ok
        assert summary.mean_batch_size >= 1
        for record in records:
            server_us = int(record["server_total_us"])
            assert int(record["queue_us"]) + int(record["inference_us"]) <= server_us
            assert server_us <= int(record["latency_from_actual_us"])

        assert result.slo_met, result.slo_verdict
        assert stored["state"] == "TRIAL_STATE_SUCCEEDED"
        assert stored["summary"]["requests_sent"] == str(summary.requests_sent)
        assert loadgen_summary["requests_sent"] == str(summary.requests_sent)

    progress = [event.progress for event in events if event.HasField("progress")]
    assert {tick.run_id for tick in progress} == {"noop-c1000-cpu-jit", "gru4rec-c1000-cpu-jit"}
    assert events[-1].HasField("finished")


async def test_a_trial_whose_service_cannot_start_fails_with_its_reason_and_the_rest_still_run(
    tmp_path: Path,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA, so that device cuda cannot start")
    spec = resolve(
        parse_spec_text(
            SPEC.replace("models: [{name: noop}, {name: gru4rec}]", "models: [{name: noop}]")
            + "hardware: [{name: gpu, device: cuda}, {name: cpu, device: cpu}]\n"
        )
    )
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(spec, store)
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_FAILED
    assert "noop-c1000-gpu-jit" in experiment.error
    failed, succeeded = experiment.trials
    assert failed.state == experiment_pb2.TRIAL_STATE_FAILED
    assert "inference service exited" in failed.error and "cuda" in failed.error.lower()
    assert not failed.HasField("summary")
    assert succeeded.state == experiment_pb2.TRIAL_STATE_SUCCEEDED
    assert succeeded.summary.requests_ok > 0
    stored = json.loads(
        (tmp_path / experiment.experiment_id / "trials" / "noop-c1000-gpu-jit" / "trial.json").read_text()
    )
    assert stored["state"] == "TRIAL_STATE_FAILED"


async def test_search_probes_one_deployment_and_reports_the_highest_passing_rate(tmp_path: Path) -> None:
    unresolved = parse_spec_text(
        SPEC.replace("models: [{name: noop}, {name: gru4rec}]", "models: [{name: noop}]").replace(
            "ramp_duration_s: 2, hold_duration_s: 2", "ramp_duration_s: 1, hold_duration_s: 2"
        )
    )
    unresolved.search.start_rate_per_s, unresolved.search.max_rate_per_s = 20, 40
    unresolved.search.max_probes = 3
    spec = resolve(unresolved)
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(spec, store)
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    (result,) = experiment.trials
    assert [(p.rate_per_s, p.slo_met) for p in result.probes] == [(20, True), (40, True)]
    assert result.max_sustained_rate_per_s == 40
    assert result.slo_met and "sustains 40 req/s" in result.slo_verdict
    assert result.summary.requests_ok == result.probes[1].summary.requests_ok
    probe_dirs = sorted(
        p.name
        for p in (tmp_path / experiment.experiment_id / "trials" / result.trial.trial_id / "probes").iterdir()
    )
    assert probe_dirs == ["01-20", "02-40"]
    # One deployment served every probe: the inference log shows a single start.
    log = (
        tmp_path / experiment.experiment_id / "trials" / result.trial.trial_id / "inference.log"
    ).read_text()
    assert log.count('"serving"') == 1
