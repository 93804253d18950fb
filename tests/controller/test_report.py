"""The experiment report from synthetic result folders: known numbers in, known rows out.

The folders are written by hand (experiment.json, series.csv, records.csv) the way the runner and
the load generator write them, so these tests need no services and run in a few seconds.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from etude.services.controller.cli import report_command
from etude.services.controller.matrix import expand_trials
from etude.services.controller.validation import resolve
from etude.services.report.analysis import (
    StableRate,
    TickVerdict,
    batch_sizes,
    highest_stable_rate,
    latency_distribution,
    session_lengths,
)
from etude.services.report.deployments import HardwareOutcome, Scenario, deployment_rows, replicas_needed
from etude.services.report.report import Report, build_report, write_report
from etude.services.report.trials import TrialReport
from etude.services.results.records import RECORD_FIELDS, RecordColumns, parse_records
from etude.services.results.series import SERIES_FIELDS
from etude.services.results.store import LocalResultStore
from google.protobuf import json_format

from etude.spec import parse_spec_text
from etude.v1 import controller_pb2, experiment_pb2, loadgen_pb2

SPEC = """
name: synthetic
models: [{name: gru4rec}]
catalog_sizes: [1000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 5}
hardware:
  - {name: cpu, device: cpu, monthly_cost_usd: 100}
  - {name: gpu, device: cpu, monthly_cost_usd: 300}
  - {name: slow, device: cpu, monthly_cost_usd: 50}
runtimes: [jit]
load: {target_rate_per_s: 100, ramp_duration_s: 5, hold_duration_s: 2, k: 10}
slo: {percentile: 90, latency_ms: 50, rate_per_s: 100}
"""
EXPERIMENT_ID = "synthetic-1"
RATES = [20.0, 40.0, 60.0, 80.0, 100.0, 100.0, 100.0]

# Every OK request of the synthetic trials splits the same way (us): intended->actual 500,
# network 1,000, server other 5,500, queue 1,000, inference 2,000 (latency 10 ms).
SEND_DELAY_US, NETWORK_US, QUEUE_US, INFERENCE_US = 500, 1_000, 1_000, 2_000


def _records_rows(tick_latencies_ms: Sequence[float], failures: dict[int, list[str]]) -> list[list[object]]:
    rows: list[list[object]] = []
    session = 0
    for tick, (rate, latency_ms) in enumerate(zip(RATES, tick_latencies_ms, strict=True)):
        statuses = failures.get(tick, [])
        for index in range(int(rate)):
            session += 1
            status = statuses[index] if index < len(statuses) else "OK"
            intended_us = int(latency_ms * 1000)
            actual_us = intended_us - SEND_DELAY_US
            server_us = actual_us - NETWORK_US
            ok = status == "OK"
            rows.append(
                [
                    tick, session, 0, 0, 0, 0, status, intended_us, actual_us,
                    QUEUE_US if ok else 0, INFERENCE_US if ok else 0, 1 if ok else 0, server_us if ok else 0,
                    0, 0, 0,  # unsharded: no calls to catalog shards
                ]
            )  # fmt: skip
    return rows


def _series_rows(records: list[list[object]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for tick, rate in enumerate(RATES):
        ticks = [row for row in records if row[0] == tick]
        ok = sum(row[6] == "OK" for row in ticks)
        rows.append([tick, rate, len(ticks), len(ticks), ok, len(ticks) - ok, 0, 0, 1.0, 2.0, 3.0])
    return rows


def _csv(header: Sequence[str], rows: list[list[object]]) -> str:
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    return "\n".join(lines) + "\n"


def _summary(records: list[list[object]], p90_ms: float) -> loadgen_pb2.LoadSummary:
    failed = [row[6] for row in records if row[6] != "OK"]
    errors: dict[str, int] = {}
    for status in failed:
        errors[str(status)] = errors.get(str(status), 0) + 1
    return loadgen_pb2.LoadSummary(
        requests_sent=len(records),
        requests_ok=len(records) - len(failed),
        requests_failed=len(failed),
        errors_by_status=errors,
        requests_offered=len(records),
        achieved_rate_per_s=(len(records) - len(failed)) / len(RATES),
        achieved_hold_rate_per_s=100.0 - sum(1 for row in records if row[0] in (5, 6) and row[6] != "OK") / 2,
        latency_from_intended=loadgen_pb2.LatencyPercentiles(
            p50_ms=10, p90_ms=p90_ms, p99_ms=p90_ms, max_ms=p90_ms
        ),
    )


# Per hardware option: latency of each tick (ms), failures per tick, the runner's verdict.
TRIALS = {
    # Fine up to 60/s, then p90 far over the bound (two failing ticks in a row).
    "cpu": ([10, 10, 10, 200, 200, 200, 200], {4: ["DEADLINE_EXCEEDED"] * 2 + ["RESOURCE_EXHAUSTED"]}, False),
    # Meets the SLO throughout.
    "gpu": ([10] * 7, {}, True),
    # Never meets it: every tick is slow.
    "slow": ([90] * 7, {}, False),
}


def write_synthetic_experiment(root: Path, experiment_id: str = EXPERIMENT_ID, scale_ms: float = 1.0) -> Path:
    """An experiment folder as the runner leaves it; `scale_ms` multiplies every latency."""
    spec = resolve(parse_spec_text(SPEC))
    experiment = controller_pb2.Experiment(
        experiment_id=experiment_id,
        state=controller_pb2.EXPERIMENT_STATE_SUCCEEDED,
        spec=spec,
        results_uri=str(root / experiment_id),
    )
    for trial in expand_trials(spec):
        latencies, failures, met = TRIALS[trial.hardware.name]
        records = _records_rows([latency * scale_ms for latency in latencies], failures)
        trial_dir = root / experiment_id / "trials" / trial.trial_id
        trial_dir.mkdir(parents=True)
        (trial_dir / "records.csv").write_text(_csv(RECORD_FIELDS, records))
        (trial_dir / "series.csv").write_text(_csv(SERIES_FIELDS, _series_rows(records)))
        experiment.trials.add(
            trial=trial,
            state=experiment_pb2.TRIAL_STATE_SUCCEEDED,
            summary=_summary(records, max(latencies) * scale_ms),
            slo_met=met,
            slo_verdict=f"hold phase: {'met' if met else 'MISSED'}",
        )
    (root / experiment_id / "experiment.json").write_text(
        json_format.MessageToJson(experiment, preserving_proto_field_name=True)
    )
    return root / experiment_id


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """Built once: rendering the plots is the slow part."""
    root = tmp_path_factory.mktemp("results")
    write_synthetic_experiment(root)
    return build_report(LocalResultStore(root), EXPERIMENT_ID)


def _trial(report: Report, hardware: str) -> TrialReport:
    return next(trial for trial in report.trials if trial.result.trial.hardware.name == hardware)


def _stable(report: Report, hardware: str) -> StableRate:
    stable = _trial(report, hardware).stable
    assert stable is not None
    return stable


def test_highest_slo_rate_is_the_last_target_rate_before_the_slo_broke(synthetic_report: Report) -> None:
    cpu = _stable(synthetic_report, "cpu")
    assert (cpu.rate_per_s, cpu.last_stable_tick, cpu.broken_at_tick) == (60, 2, 3)
    verdicts = _trial(synthetic_report, "cpu").verdicts
    assert [verdict.met for verdict in verdicts] == [True, True, True, False, False, False, False]
    # Tick 4: 3 of 100 failed, counted as infinitely slow, and only 97% answered OK.
    assert verdicts[4].ok == 97
    gpu = _stable(synthetic_report, "gpu")
    assert gpu.rate_per_s == 100 and gpu.held_throughout
    slow = _stable(synthetic_report, "slow")
    assert slow.rate_per_s == 0 and slow.last_stable_tick is None


def test_deployment_table_extrapolates_replicas_and_marks_the_cheapest(synthetic_report: Report) -> None:
    rows = {row.hardware: row for row in synthetic_report.deployments}
    # cpu held 60/s per replica: ceil(100 / 60) = 2 replicas at 2 x $100.
    assert (rows["cpu"].replicas, rows["cpu"].monthly_cost_usd) == (2, 200)
    assert rows["cpu"].basis == "extrapolated from 1 replica" and rows["cpu"].meets_slo
    assert (rows["gpu"].replicas, rows["gpu"].monthly_cost_usd, rows["gpu"].basis) == (1, 300, "measured")
    assert rows["slow"].replicas is None and not rows["slow"].meets_slo
    assert [row.hardware for row in synthetic_report.deployments if row.cheapest] == ["cpu"]
    markdown = synthetic_report.markdown
    assert "| **gru4rec, 1,000 items, jit** | **cpu** | **2** | **$200.00** |" in markdown
    assert "| gru4rec, 1,000 items, jit | slow | - | - | does not meet the SLO |" in markdown


def test_trial_table_shows_errors_by_status_and_the_runner_verdict(synthetic_report: Report) -> None:
    markdown = synthetic_report.markdown
    cpu_row = next(line for line in markdown.splitlines() if line.startswith("| gru4rec-c1000-cpu-jit |"))
    assert "| 3 (DEADLINE_EXCEEDED 2, RESOURCE_EXHAUSTED 1) |" in cpu_row
    assert "| MISSED | 60 | 60 |" in cpu_row
    gpu_row = next(line for line in markdown.splitlines() if line.startswith("| gru4rec-c1000-gpu-jit |"))
    assert "| met | 100 (held throughout) |" in gpu_row
    assert "SLO broke at tick 3 (target 80/s: p90 200.00 ms" in markdown
    assert "Stability rule." in markdown


def test_latency_split_recovers_the_known_parts(synthetic_report: Report) -> None:
    split = _trial(synthetic_report, "gpu").split
    assert split is not None
    assert split.p50_ms == pytest.approx(
        {
            "send delay (client)": 0.5,
            "network and serialisation": 1.0,
            "server other": 5.5,
            "queueing": 1.0,
            "inference": 2.0,
        }
    )
    assert split.requests == sum(RATES)


def test_report_states_the_workload_parameterisation_and_fitted_exponents(synthetic_report: Report) -> None:
    markdown = synthetic_report.markdown
    assert "classic power-law exponents" in markdown and "alpha_length 2.2, alpha_clicks 1.8" in markdown
    popularity = next(fit for fit in synthetic_report.fitted_exponents if fit.name == "item popularity")
    assert popularity.expected == 1.8 and popularity.sample_size == 1000
    assert popularity.fitted == pytest.approx(1.8, rel=0.1)


def test_html_is_self_contained_with_embedded_svg_plots(synthetic_report: Report) -> None:
    page = synthetic_report.html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page
    # Per trial a ramp plot and a distributions plot, the latency-vs-rate plot and the split.
    assert page.count('src="data:image/svg+xml;base64,') == 3 * 2 + 1 + 1
    assert '<tr class="cheapest">' in page


def test_the_verdict_and_the_cheapest_option_come_before_everything_else(synthetic_report: Report) -> None:
    headings = [line for line in synthetic_report.markdown.splitlines() if line.startswith("#")]
    assert headings[:3] == [
        f"# Etude report: {EXPERIMENT_ID}",
        "## Verdict",
        "### Deployment options (Table I)",
    ]
    order = [
        headings.index(name)
        for name in (
            "## Verdict",
            "## Experiment",
            "## Trials",
            "## Workload: requested and fitted exponents",
        )
    ]
    assert order == sorted(order)
    cheapest = "- gru4rec, 1,000 items, jit: cheapest is cpu with 2 replicas, $200.00/month"
    assert f"{cheapest} (extrapolated from 1 replica)" in synthetic_report.markdown
    assert "1 of 3 trials met it in their hold phase." in synthetic_report.markdown


def test_the_means_of_the_latency_parts_add_up_to_the_mean_latency(synthetic_report: Report) -> None:
    for trial in synthetic_report.trials:
        split = trial.split
        assert split is not None
        assert sum(split.mean_ms.values()) + split.untracked_ms == pytest.approx(split.mean_total_ms)
        # The synthetic parts are never clipped: nothing is left untracked.
        assert split.untracked_ms == pytest.approx(0, abs=1e-9)
    cpu = _trial(synthetic_report, "cpu").split
    assert cpu is not None
    # 120 OK answers took 10 ms, 377 took 200 ms; "server other" carries the difference.
    assert cpu.mean_total_ms == pytest.approx((120 * 10 + 377 * 200) / 497)
    assert cpu.mean_ms["server other"] == pytest.approx(cpu.mean_total_ms - 0.5 - 1.0 - 1.0 - 2.0)
    assert cpu.mean_ms["queueing"] == pytest.approx(1.0) and cpu.mean_ms["inference"] == pytest.approx(2.0)


def test_the_percentile_distribution_and_the_batch_sizes_come_from_the_ok_answers() -> None:
    # Eight OK answers from batches of 1, 1, 2 and 4 (a batch of b answers b requests), one failure.
    sizes_and_latencies_ms = [(1, 1), (1, 2), (2, 3), (2, 4), (4, 5), (4, 6), (4, 7), (4, 100)]
    rows: list[list[object]] = [
        [
            0,
            index,
            0,
            0,
            0,
            0,
            "OK",
            latency_ms * 1000,
            latency_ms * 1000,
            0,
            0,
            size,
            latency_ms * 1000,
            0,
            0,
            0,
        ]
        for index, (size, latency_ms) in enumerate(sizes_and_latencies_ms)
    ]
    rows.append([0, 99, 0, 0, 0, 0, "DEADLINE_EXCEEDED", 999_000, 999_000, 0, 0, 0, 0, 0, 0, 0])
    records = parse_records(_csv(RECORD_FIELDS, rows))
    batches = batch_sizes(records)
    assert batches is not None
    assert batches.batches_by_size == {1: 2.0, 2: 1.0, 4: 1.0}
    assert (batches.batches, batches.requests, batches.mean_batch_size) == (4.0, 8, 2.0)
    distribution = latency_distribution(records)
    assert distribution is not None and distribution.requests == 8
    assert distribution.percentiles[0] == 0.0 and distribution.percentiles[-1] == pytest.approx(90.0)
    assert list(distribution.latencies_ms) == sorted(distribution.latencies_ms)
    assert distribution.latencies_ms[0] == 1.0 and distribution.max_ms == 100.0  # not the failure's 999 ms


def test_write_report_goes_through_the_store_interface_only(tmp_path: Path) -> None:
    write_synthetic_experiment(tmp_path)

    class RemoteLikeStore(LocalResultStore):
        def local_dir(self, relative: str) -> Path:
            raise AssertionError("the report must not need a local folder")

    store = RemoteLikeStore(tmp_path)
    write_report(store, EXPERIMENT_ID)
    markdown = store.read_text(f"{EXPERIMENT_ID}/report.md")
    assert markdown.startswith(f"# Etude report: {EXPERIMENT_ID}")
    assert "data:image/svg+xml;base64," in store.read_text(f"{EXPERIMENT_ID}/report.html")
    # Every plot is a file beside report.md, and every image link of the markdown resolves.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 3 * 2 + 1 + 1
    for link in links:
        assert not link.startswith(("/", "http")), link
        assert (tmp_path / EXPERIMENT_ID / link).read_text().lstrip().startswith("<?xml"), link


def test_report_command_rebuilds_every_experiment_of_a_results_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_synthetic_experiment(tmp_path, "first")
    write_synthetic_experiment(tmp_path, "second")
    # The command configures process-wide logging onto pytest's captured stderr: not here.
    monkeypatch.setattr("etude.logs.configure_logging", lambda *args: None)
    capsys.readouterr()
    assert report_command(argparse.Namespace(results=str(tmp_path))) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if "report_written" not in line]
    assert printed == [
        str(tmp_path / name / file) for name in ("first", "second") for file in ("report.html", "report.md")
    ]
    assert report_command(argparse.Namespace(results=str(tmp_path / "missing"))) == 2


def _verdict(tick: int, rate: float, met: bool | None) -> TickVerdict:
    nan = math.nan
    return TickVerdict(tick, rate, 10, 10, 10, 1.0, nan, nan, nan, nan, met)


def test_an_isolated_failing_tick_is_forgiven_but_two_in_a_row_end_the_stable_region() -> None:
    met = [True, False, True, True, False, False, True]
    verdicts = [_verdict(tick, 10.0 * (tick + 1), ok) for tick, ok in enumerate(met)]
    forgiving = highest_stable_rate(verdicts)
    assert (forgiving.rate_per_s, forgiving.forgiven_ticks, forgiving.broken_at_tick) == (40, (1,), 4)
    strict = highest_stable_rate(verdicts, forgive_isolated=False)
    assert (strict.rate_per_s, strict.broken_at_tick) == (10, 1)


def test_a_failing_last_tick_is_not_forgiven_and_empty_ticks_are_skipped() -> None:
    verdicts = [
        _verdict(0, 0.5, None),
        _verdict(1, 1.0, True),
        _verdict(2, 1.5, None),
        _verdict(3, 2.0, False),
    ]
    stable = highest_stable_rate(verdicts)
    assert (stable.rate_per_s, stable.broken_at_tick, stable.forgiven_ticks) == (1.0, 3, ())


def test_replicas_needed_rounds_up_and_counts_the_measured_replicas() -> None:
    assert replicas_needed(1000, 250, 1) == 4
    assert replicas_needed(1000, 300, 1) == 4
    assert replicas_needed(100, 100.0000000001, 1) == 1
    assert replicas_needed(1000, 500, 2) == 4  # 250/s per replica


def test_a_measured_miss_with_enough_ramp_capacity_still_needs_one_more_replica() -> None:
    """The ramp held the rate, but the hold phase missed: never claim the measured count meets it."""
    scenario = Scenario("noop", 1000, "jit")
    outcome = HardwareOutcome(
        scenario, experiment_pb2.HardwareOption(name="cpu", monthly_cost_usd=10), 1, False, 120.0
    )
    (row,) = deployment_rows([outcome], 100)
    assert (row.replicas, row.monthly_cost_usd, row.cheapest) == (2, 20, True)


def test_session_lengths_count_the_clicks_replayed_per_session() -> None:
    ints = np.array
    columns = {name: ints([0] * 5) for name in RECORD_FIELDS}
    columns.update(
        tick=ints([0, 0, 1, 1, 2]),
        session_id=np.array(["7", "8", "7", "9", "7"]),
        click_index=ints([0, 0, 1, 0, 2]),
        status=np.array(["OK"] * 5),
    )
    records = RecordColumns(**columns)
    assert sorted(session_lengths(records).tolist()) == [1, 1, 3]


def test_a_preset_workload_is_reported_as_scipy_fits_with_a_reference_exponent(tmp_path: Path) -> None:
    """scipy.stats.powerlaw parameters have no alpha: the fit is compared with that of the
    requested distribution's own draws."""
    write_synthetic_experiment(tmp_path)
    path = tmp_path / EXPERIMENT_ID / "experiment.json"
    experiment = json_format.Parse(path.read_text(), controller_pb2.Experiment())
    workload = experiment.spec.workload
    workload.ClearField("exponents")
    workload.preset = "bolcom"
    workload.powerlaw_fits.session_lengths.a, workload.powerlaw_fits.session_lengths.loc = 0.07004, 2
    workload.powerlaw_fits.session_lengths.scale = 277
    workload.powerlaw_fits.click_counts.a, workload.powerlaw_fits.click_counts.loc = 0.04069, 1
    workload.powerlaw_fits.click_counts.scale = 2335
    path.write_text(json_format.MessageToJson(experiment, preserving_proto_field_name=True))

    report = build_report(LocalResultStore(tmp_path), EXPERIMENT_ID)
    assert "preset bolcom; scipy.stats.powerlaw fits" in report.markdown
    popularity = next(fit for fit in report.fitted_exponents if fit.name == "item popularity")
    assert popularity.requested == "scipy.stats.powerlaw(a=0.04069, loc=1, scale=2335)"
    assert popularity.expected is not None and popularity.fitted == pytest.approx(
        popularity.expected, rel=0.1
    )
