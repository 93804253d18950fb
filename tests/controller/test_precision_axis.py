"""Precision is an experiment axis: one trial per value, named in the trial id, and a reduced
precision's trial carries its recall@k against fp32 (MLPerf's accuracy mode) into trial.json and
the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.matrix import expand_trials
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.inference.precision import cpu_bf16_support
from etude.services.results.store import LocalResultStore

from etude.spec import SpecError, parse_spec_dict
from etude.v1 import experiment_pb2

SPEC = {
    "name": "precision",
    "models": [{"name": "gru4rec"}],
    "catalog_sizes": [2000],
    "runtimes": ["eager"],
    "precisions": ["fp32", "bf16"],
    "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 1.8}},
    "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 1},
}


def test_each_precision_is_a_trial_and_fp32_keeps_its_old_id() -> None:
    trials = expand_trials(resolve(parse_spec_dict(SPEC)))
    assert [trial.trial_id for trial in trials] == ["gru4rec-c2000-cpu-eager", "gru4rec-c2000-cpu-eager-bf16"]
    assert [trial.precision for trial in trials] == ["fp32", "bf16"]


def test_an_unknown_precision_is_refused_naming_it() -> None:
    with pytest.raises(SpecError) as refused:
        resolve(parse_spec_dict({**SPEC, "precisions": ["fp8"]}))
    assert refused.value.field == "precisions[0]"


@pytest.mark.skipif(not cpu_bf16_support()[0], reason="this CPU has no native bf16")
async def test_a_bf16_trial_records_its_recall_against_fp32_in_trial_json_and_the_report(
    tmp_path: Path,
) -> None:
    spec = resolve(parse_spec_dict({**SPEC, "results": str(tmp_path)}))
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(spec, store)
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=180), store).run()
    fp32, bf16 = experiment.trials
    assert fp32.state == bf16.state == experiment_pb2.TRIAL_STATE_SUCCEEDED, (fp32.error, bf16.error)
    assert fp32.recall_k == 0  # nothing to compare fp32 against
    assert bf16.recall_k == 21 and bf16.recall_sessions >= 1000 and 0.9 <= bf16.recall_at_k <= 1.0
    folder = tmp_path / experiment.experiment_id
    stored = json.loads((folder / "trials" / bf16.trial.trial_id / "trial.json").read_text())
    assert stored["recall_at_k"] == pytest.approx(bf16.recall_at_k)
    report = (folder / "report.md").read_text()
    assert f"bf16 scoring: recall@21 {bf16.recall_at_k:.4f} against fp32" in report
