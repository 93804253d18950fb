"""Every finished experiment gets its report: a tiny real experiment, and a runner whose report fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from etude.services.cli import main
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.drivers.processes import ServiceStartError
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.report.report import build_report
from etude.services.results.layout import SERIES_FILE
from etude.services.results.series import read_series
from etude.services.results.store import LocalResultStore

from etude.spec import parse_spec_text
from etude.v1 import controller_pb2, experiment_pb2
from tests.controller.driver_fakes import ServicesNeverLost

SPEC = """
name: e2e-report
models: [{name: noop}]
catalog_sizes: [1000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 3}
hardware: [{name: cpu, device: cpu, monthly_cost_usd: 108}]
runtimes: [jit]
load: {target_rate_per_s: 40, ramp_duration_s: 2, hold_duration_s: 2, k: 10}
slo: {percentile: 90, latency_ms: 500}
"""


@pytest.mark.slow
async def test_a_real_experiment_writes_its_report_and_etude_report_rebuilds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(resolve(parse_spec_text(SPEC)), store)
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store).run()
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error

    folder = tmp_path / experiment.experiment_id
    # The controller sampled the inference service's CPU and memory into every tick of series.csv.
    (trial_folder,) = (folder / "trials").iterdir()
    series = read_series(trial_folder / SERIES_FILE)
    assert len(series) == 4
    assert all(row.inference_cpu_cores is not None and row.inference_cpu_cores > 0 for row in series)
    assert all(row.inference_rss_mb is not None and row.inference_rss_mb > 50 for row in series)
    assert all(row.gpu_utilization_percent is None for row in series)  # a CPU trial holds no GPU
    markdown = (folder / "report.md").read_text()
    assert "noop-c1000-cpu-jit" in markdown and "| **noop, 1,000 items, jit** | **cpu** | **1** |" in markdown
    # What produced it: versions and machine.
    assert "## Environment" in markdown and "- Etude 0.1.0" in markdown and "torch " in markdown
    # And the inference service's own, as its GetModelInfo reported it, in trial.json and the report.
    trial = json.loads((folder / "trials" / "noop-c1000-cpu-jit" / "trial.json").read_text())
    assert trial["inference_environment"]["etude_version"] == "0.1.0"
    assert trial["inference_environment"]["torch_version"] == experiment.environment.torch_version
    assert "### Inference service of noop-c1000-cpu-jit" in markdown
    assert "GPU: none used by the inference service" in markdown
    assert (folder / "report.html").read_text().count("data:image/svg+xml;base64,") >= 3
    assert (folder / "figures" / "distributions-noop-c1000-cpu-jit.svg").exists()
    # Real timings: the parts' means add up to the mean latency within the clipped remainder.
    report = build_report(LocalResultStore(tmp_path), experiment.experiment_id)
    split = report.trials[0].split
    assert split is not None and split.mean_total_ms > 0
    assert abs(split.untracked_ms) <= 0.05 * split.mean_total_ms

    (folder / "report.md").unlink()
    (folder / "report.html").unlink()
    capsys.readouterr()
    # The command configures process-wide logging onto pytest's captured stderr: not here.
    monkeypatch.setattr("etude.logs.configure_logging", lambda *args: None)
    assert main(["report", str(folder)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == [str(folder / "report.html"), str(folder / "report.md")]
    assert (folder / "report.md").read_text() == markdown


class _UnstartableDriver(ServicesNeverLost):
    """Deploys nothing: every trial fails at once, so the runner finishes without any process."""

    name = "unstartable"

    @asynccontextmanager
    async def inference_service(self, *_: object) -> AsyncIterator[str]:
        raise ServiceStartError("inference service exited: no such device")
        yield ""  # pragma: no cover

    @asynccontextmanager
    async def loadgen_service(self, log_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        yield "127.0.0.1:1"

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        yield str(local_dir)


async def test_a_failed_experiment_still_gets_a_report_listing_the_failure(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(resolve(parse_spec_text(SPEC)), store)
    events: list[controller_pb2.ExperimentEvent] = []
    await ExperimentRunner(experiment, _UnstartableDriver(), store, events.append).run()
    assert experiment.trials[0].state == experiment_pb2.TRIAL_STATE_FAILED
    markdown = (tmp_path / experiment.experiment_id / "report.md").read_text()
    assert "no measurement" in markdown and "no such device" in markdown
    assert events[-1].HasField("finished")


async def test_a_report_that_fails_is_logged_and_loses_no_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_report(*_: object) -> None:
        raise RuntimeError("plotting broke")

    monkeypatch.setattr("etude.services.report.report.write_report", broken_report)
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(resolve(parse_spec_text(SPEC)), store)
    events: list[controller_pb2.ExperimentEvent] = []
    await ExperimentRunner(experiment, _UnstartableDriver(), store, events.append).run()
    folder = tmp_path / experiment.experiment_id
    assert (folder / "experiment.json").exists() and (folder / "summary.md").exists()
    assert not (folder / "report.md").exists()
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_FAILED
    assert "trials failed" in experiment.error and "report" not in experiment.error
    assert events[-1].HasField("finished")
