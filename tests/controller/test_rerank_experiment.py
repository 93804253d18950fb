"""A re-ranking experiment end to end: the spec's load.candidates_per_request reaches the loadgen
through the controller, the requests re-rank that many candidates, and the report says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude.spec import parse_spec_text
from etude.v1 import controller_pb2, experiment_pb2

SPEC = """
name: rerank
models: [{name: gru4rec}]
catalog_sizes: [2000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 3}
runtimes: [eager]
load: {target_rate_per_s: 20, ramp_duration_s: 1, hold_duration_s: 2, k: 10, candidates_per_request: 50}
slo: {percentile: 90, latency_ms: 1000}
"""


@pytest.mark.slow
async def test_a_spec_asking_for_candidates_runs_a_re_ranking_load_and_the_report_names_the_mode(
    tmp_path: Path,
) -> None:
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(resolve(parse_spec_text(SPEC)), store)
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store).run()
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    (result,) = experiment.trials
    assert result.state == experiment_pb2.TRIAL_STATE_SUCCEEDED, result.error
    assert result.summary.candidates_per_request == 50
    assert result.summary.requests_ok == result.summary.requests_sent > 0
    markdown = (tmp_path / experiment.experiment_id / "report.md").read_text()
    assert "re-ranking: each request scored 50 candidates" in markdown
