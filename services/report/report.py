"""The experiment report: report.md with its plots beside it (figures/*.svg) and report.html
(self-contained, the same plots embedded), rebuilt at any time from what a finished experiment
left in its result store.

It reads only through the results layer (experiment.json, and per trial series.csv, records.csv
and the trace files), so a Cloud Storage store can serve the same report later. Blocking reads:
the runner builds it in a thread.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from etude.v1 import controller_pb2, experiment_pb2, workload_pb2

from ..results.documents import load_experiment
from ..results.layout import RECORDS_FILE, Layout
from ..results.store import ResultStore
from ..workload.fit import ClickLogError
from ..workload.gcs_log import local_click_log
from ..workload.replay import ReplayRequest, index_click_log
from ..workload.trial import replay_source
from . import plots
from .deployments import DeploymentRow, HardwareOutcome, Scenario, deployment_rows
from .document import Block, render_html, render_markdown
from .fits import (
    FittedExponent,
    ReplayedLog,
    fit_click_counts,
    fit_replay,
    fit_replayed_log,
    fit_session_lengths,
    workload_of,
)
from .sections import report_blocks, variant
from .trials import TrialReport, analyse_trial

_log = structlog.get_logger()

State = experiment_pb2.TrialState


@dataclass(frozen=True, eq=False)
class Report:
    experiment: controller_pb2.Experiment
    trials: list[TrialReport]
    fitted_exponents: list[FittedExponent]
    deployments: list[DeploymentRow]
    figures: dict[str, str]  # SVG text by name
    blocks: list[Block]

    @property
    def markdown(self) -> str:
        return render_markdown(self.blocks)

    @property
    def html(self) -> str:
        return render_html(self.blocks, self.figures, f"Etude report: {self.experiment.experiment_id}")


def build_report(store: ResultStore, experiment_id: str) -> Report:
    """Reads the experiment and its trials' files from `store` and builds the whole report."""
    experiment = load_experiment(store, experiment_id)
    spec = experiment.spec
    layout = Layout(experiment_id)
    trials = [analyse_trial(store, layout, result, spec) for result in experiment.trials]
    replayed_log = None
    if spec.workload.source == "replay":
        replayed_log, fitted = _fit_replay(spec, trials)
    else:
        fitted = _fit_exponents(spec, trials)
    deployments = deployment_rows(_hardware_outcomes(trials), spec.slo.rate_per_s)
    figures = _figures(spec, trials)
    blocks = report_blocks(experiment, trials, fitted, deployments, figures, replayed_log)
    return Report(experiment, trials, fitted, deployments, figures, blocks)


def write_report(store: ResultStore, experiment_id: str) -> Report:
    """Builds the report and writes <experiment>/report.md, its figures and report.html."""
    report = build_report(store, experiment_id)
    layout = Layout(experiment_id)
    for name, svg in report.figures.items():
        store.write_text(layout.figure(name), svg)
    store.write_text(layout.report_markdown, report.markdown)
    store.write_text(layout.report_html, report.html)
    _log.info("report_written", experiment_id=experiment_id, uri=store.uri(layout.report_html))
    return report


def _fit_replay(
    spec: experiment_pb2.ExperimentSpec, trials: Sequence[TrialReport]
) -> tuple[ReplayedLog | None, list[FittedExponent]]:
    """The replayed log's exponents (the whole log, read again) beside those of the clicks the
    trial that got furthest replayed; none when the log cannot be read here any more."""
    source = ReplayRequest.from_proto(
        workload_pb2.WorkloadSpec(catalog_size=1, replay=replay_source(spec.workload))
    ).source
    try:
        with tempfile.TemporaryDirectory(prefix="etude-report-log-") as folder:
            index = index_click_log(local_click_log(source, Path(folder)))
    except ClickLogError as error:
        _log.warning("replayed_log_not_fitted", path=source.path, error=str(error))
        return None, []
    try:
        log = fit_replayed_log(index, source.path)
        furthest = max(trials, key=lambda trial: len(trial.replayed), default=None)
        if furthest is None or not len(furthest.replayed):
            return log, []
        folder = furthest.trial_id if furthest.files == "." else f"{furthest.trial_id}/{furthest.files}"
        return log, fit_replay(
            index, log, furthest.replayed, f"the clicks replayed in {folder}/{RECORDS_FILE}"
        )
    finally:
        index.close()


def _fit_exponents(
    spec: experiment_pb2.ExperimentSpec, trials: Sequence[TrialReport]
) -> list[FittedExponent]:
    fitted = []
    # Every trial replays the same sessions (same seed) from the first one: the trial that got
    # furthest holds the longest sample.
    longest = max(trials, key=lambda trial: trial.session_lengths.size, default=None)
    if longest is not None and longest.session_lengths.size:
        workload = workload_of(longest.result.trial, spec)
        if workload is not None:
            folder = longest.trial_id if longest.files == "." else f"{longest.trial_id}/{longest.files}"
            # Named relative to the experiment's trials/ folder, as a reader finds it.
            source = f"clicks per session in {folder}/{RECORDS_FILE}"
            fitted.append(fit_session_lengths(longest.session_lengths, workload, source))
    done = set()
    for trial in trials:
        if trial.result.trial.catalog_size in done:
            continue
        done.add(trial.result.trial.catalog_size)
        workload = workload_of(trial.result.trial, spec)
        if workload is None:
            continue
        try:
            fitted.append(fit_click_counts(workload))
        except (ValueError, MemoryError) as error:
            _log.warning("click_count_fit_failed", catalog_size=workload.catalog_size, error=str(error))
    return fitted


def _hardware_outcomes(trials: Sequence[TrialReport]) -> list[HardwareOutcome]:
    groups: dict[tuple[Scenario, str], list[TrialReport]] = {}
    for trial in trials:
        spec = trial.result.trial
        scenario = Scenario(spec.model.name, spec.catalog_size, spec.runtime)
        groups.setdefault((scenario, spec.hardware.name), []).append(trial)
    outcomes = []
    for (scenario, _), members in groups.items():
        hardware = members[0].result.trial.hardware
        failure = ""
        for member in members:
            unmeasured = member.stable is None and member.searched_rate_per_s is None
            if member.result.state != State.TRIAL_STATE_SUCCEEDED or unmeasured:
                state = State.Name(member.result.state).removeprefix("TRIAL_STATE_").lower()
                reason = member.result.error or member.problem
                failure = f"{member.trial_id} {state}" + (f": {reason}" if reason else "")
                break
        outcomes.append(
            HardwareOutcome(
                scenario=scenario,
                hardware=hardware,
                measured_replicas=hardware.replicas or 1,
                measured_met=all(member.result.slo_met for member in members),
                sustained_rate_per_s=min(member.sustained_rate_per_s for member in members),
                failure=failure,
            )
        )
    return outcomes


def _figures(spec: experiment_pb2.ExperimentSpec, trials: Sequence[TrialReport]) -> dict[str, str]:
    figures: dict[str, str] = {}
    slo = spec.slo
    for trial in trials:
        if trial.stable is not None and trial.series:
            figures[f"ramp-{trial.trial_id}"] = plots.ramp_figure(
                trial.trial_id, trial.verdicts, trial.series, slo.percentile, slo.latency_ms, trial.stable
            )
        if trial.distribution is not None or trial.batch_sizes is not None:
            figures[f"distributions-{trial.trial_id}"] = plots.trial_distributions_figure(
                trial.trial_id, trial.distribution, trial.batch_sizes, slo.percentile, slo.latency_ms
            )
    # Ramp ticks only: hold ticks repeat the target rate and would fold the line back.
    ramp_ticks = spec.load.ramp_duration_s or spec.load.hold_duration_s
    for catalog_size in sorted(set(spec.catalog_sizes)):
        lines = []
        for trial in trials:
            if trial.result.trial.catalog_size != catalog_size or not trial.verdicts:
                continue
            points = [v for v in trial.verdicts[:ramp_ticks] if math.isfinite(v.ok_slo_latency_ms)]
            if points:
                lines.append(
                    plots.RateLine(
                        trial.result.trial.model.name,
                        variant(trial.result.trial),
                        [point.target_rate_per_s for point in points],
                        [point.ok_slo_latency_ms for point in points],
                    )
                )
        if lines:
            figures[f"rate-c{catalog_size}"] = plots.latency_vs_rate_figure(
                f"{catalog_size:,} items", lines, slo.percentile, slo.latency_ms
            )
    split_trials = [trial for trial in trials if trial.split is not None]
    if split_trials:
        figures["split"] = plots.latency_split_figure(
            [trial.trial_id for trial in split_trials],
            [trial.split for trial in split_trials if trial.split is not None],
        )
    return figures
