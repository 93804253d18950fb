"""The experiment report: report.md and report.html (self-contained, plots embedded as PNG data
URIs), rebuilt at any time from what a finished experiment left in its result store.

It reads only through the ResultStore protocol (experiment.json, and per trial series.csv and
records.csv), so a Cloud Storage store can serve the same report later.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from etude import defaults
from etude.v1 import controller_pb2, experiment_pb2

from ..loadgen.records import RECORDS_FILE, SERIES_FILE
from ..workload.generator import InvalidWorkloadSpec, SyntheticWorkload
from . import plots
from .options import workload_spec
from .report_analysis import (
    EXPERIMENT_FILE,
    REFERENCE_DRAWS,
    SPLIT_PARTS,
    STABILITY_RULE,
    DeploymentRow,
    FittedExponent,
    HardwareOutcome,
    LatencySplit,
    ReportInputError,
    Scenario,
    SeriesTick,
    StableRate,
    TickVerdict,
    deployment_rows,
    fit_click_counts,
    fit_session_lengths,
    highest_stable_rate,
    latency_split,
    load_experiment,
    parse_records,
    parse_series,
    session_lengths,
    tick_verdicts,
)
from .store import LocalResultStore, ResultStore
from .traces import TraceSplit, analyse_trial_traces

_log = structlog.get_logger()

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"

State = experiment_pb2.TrialState


@dataclass(frozen=True, eq=False)
class TrialReport:
    """One trial's result with what its stored series and records say."""

    result: experiment_pb2.TrialResult
    series: list[SeriesTick] = field(default_factory=list)
    verdicts: list[TickVerdict] = field(default_factory=list)
    stable: StableRate | None = None  # None: no series/records to judge
    strict: StableRate | None = None
    split: LatencySplit | None = None
    # The same split from the sampled traces, and how closely it agrees (None: no traces).
    traces: TraceSplit | None = None
    session_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    problem: str = ""  # why the files could not be analysed
    # The folder analysed, relative to the trial's: "." or, for an SLO search, the probe that
    # sustained the highest rate (probes/NN-RATE).
    files: str = "."

    @property
    def searched_rate_per_s(self) -> float | None:
        """The highest rate an SLO search sustained (`etude search`); None for a ramp."""
        return self.result.max_sustained_rate_per_s if self.result.probes else None

    @property
    def sustained_rate_per_s(self) -> float:
        """The search's rate when searched, else the ramp's highest SLO rate (0: none)."""
        if self.searched_rate_per_s is not None:
            return self.searched_rate_per_s
        return self.stable.rate_per_s if self.stable is not None else 0.0

    @property
    def trial_id(self) -> str:
        return self.result.trial.trial_id


# The report as a list of blocks, rendered the same way to Markdown and to HTML.
@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    bold_rows: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Image:
    name: str  # key into Report.figures
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


@dataclass(frozen=True, eq=False)
class Report:
    experiment: controller_pb2.Experiment
    trials: list[TrialReport]
    fitted_exponents: list[FittedExponent]
    deployments: list[DeploymentRow]
    figures: dict[str, bytes]  # PNG bytes by name
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
    trials = [_analyse_trial(store, experiment_id, result, spec) for result in experiment.trials]
    fitted = _fit_exponents(spec, trials)
    deployments = deployment_rows(_hardware_outcomes(trials), spec.slo.rate_per_s)
    figures = _figures(spec, trials)
    blocks = _blocks(experiment, trials, fitted, deployments, figures)
    return Report(experiment, trials, fitted, deployments, figures, blocks)


def write_report(store: ResultStore, experiment_id: str) -> Report:
    """Builds the report and writes <experiment>/report.md and <experiment>/report.html."""
    report = build_report(store, experiment_id)
    store.write_text(f"{experiment_id}/{REPORT_MARKDOWN}", report.markdown)
    store.write_text(f"{experiment_id}/{REPORT_HTML}", report.html)
    _log.info("report_written", experiment_id=experiment_id, uri=store.uri(f"{experiment_id}/{REPORT_HTML}"))
    return report


def experiments_at(path: str | Path) -> list[tuple[ResultStore, str]]:
    """(store, experiment id) for an experiment folder, or for every experiment in a results
    folder; either may be a local path or gs://bucket/prefix."""
    if str(path).startswith("gs://"):
        return _gcs_experiments_at(str(path).rstrip("/"))
    folder = Path(path).resolve()
    if (folder / EXPERIMENT_FILE).is_file():
        return [(LocalResultStore(folder.parent), folder.name)]
    if not folder.is_dir():
        raise ReportInputError(f"{folder}: no such folder")
    found = _experiments_in(LocalResultStore(folder))
    if not found:
        raise ReportInputError(f"{folder}: neither an experiment folder nor a results folder holding one")
    return found


def _experiments_in(store: ResultStore) -> list[tuple[ResultStore, str]]:
    return [(store, name) for name in store.list_dirs() if store.exists(f"{name}/{EXPERIMENT_FILE}")]


def _gcs_experiments_at(uri: str) -> list[tuple[ResultStore, str]]:
    from etude.spec import SpecError

    from .stores import open_store

    parent, _, name = uri.rpartition("/")
    try:
        if parent != "gs:/" and name:
            parent_store = open_store(parent)
            if parent_store.exists(f"{name}/{EXPERIMENT_FILE}"):
                return [(parent_store, name)]
        found = _experiments_in(open_store(uri))
    except SpecError as error:
        raise ReportInputError(str(error)) from error
    if not found:
        raise ReportInputError(f"{uri}: neither an experiment nor a results prefix holding one")
    return found


def _analysed_folder(result: experiment_pb2.TrialResult) -> str:
    """The folder to analyse: "." for a ramp; for a search, the probe that sustained the
    highest rate (else the last probe)."""
    if not result.probes:
        return "."
    chosen = len(result.probes) - 1
    for index, probe in enumerate(result.probes):
        if probe.slo_met and probe.rate_per_s >= result.probes[chosen].rate_per_s:
            chosen = index
    if not result.probes[chosen].slo_met:
        chosen = len(result.probes) - 1
    # The runner names probe folders NN-RATE, NN counting from 01 in probe order.
    return f"probes/{chosen + 1:02d}-{result.probes[chosen].rate_per_s:g}"


def _analyse_trial(
    store: ResultStore,
    experiment_id: str,
    result: experiment_pb2.TrialResult,
    spec: experiment_pb2.ExperimentSpec,
) -> TrialReport:
    files = _analysed_folder(result)
    trial_dir = f"{experiment_id}/trials/{result.trial.trial_id}"
    folder = trial_dir if files == "." else f"{trial_dir}/{files}"
    series_path, records_path = f"{folder}/{SERIES_FILE}", f"{folder}/{RECORDS_FILE}"
    if not (store.exists(series_path) and store.exists(records_path)):
        state = State.Name(result.state).removeprefix("TRIAL_STATE_").lower()
        return TrialReport(result, problem=f"no {SERIES_FILE}/{RECORDS_FILE} (trial {state})", files=files)
    try:
        series = parse_series(store.read_text(series_path))
        records = parse_records(store.read_text(records_path))
    except ReportInputError as error:
        return TrialReport(result, problem=str(error), files=files)
    verdicts = tick_verdicts(series, records, spec.slo.percentile, spec.slo.latency_ms)
    return TrialReport(
        result,
        series=series,
        verdicts=verdicts,
        stable=highest_stable_rate(verdicts),
        strict=highest_stable_rate(verdicts, forgive_isolated=False),
        split=latency_split(records),
        traces=_trace_split(store, experiment_id, folder),
        session_lengths=session_lengths(records),
        files=files,
    )


def _trace_split(store: ResultStore, experiment_id: str, folder: str) -> TraceSplit | None:
    """The trace-based split; a trace file that cannot be read costs the report this section only."""
    try:
        return analyse_trial_traces(store, experiment_id, folder)
    except (OSError, ValueError) as error:
        _log.warning("trace_split_failed", folder=folder, error=str(error))
        return None


def _workload(trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec) -> SyntheticWorkload | None:
    """The generator a trial's sessions came from (None: not a synthetic workload)."""
    if spec.workload.source not in ("", "synthetic"):
        return None
    try:
        return SyntheticWorkload.from_proto(workload_spec(trial, spec))
    except InvalidWorkloadSpec:
        return None


def _fit_exponents(
    spec: experiment_pb2.ExperimentSpec, trials: Sequence[TrialReport]
) -> list[FittedExponent]:
    fitted = []
    # Every trial replays the same sessions (same seed) from the first one: the trial that got
    # furthest holds the longest sample.
    longest = max(trials, key=lambda trial: trial.session_lengths.size, default=None)
    if longest is not None and longest.session_lengths.size:
        workload = _workload(longest.result.trial, spec)
        if workload is not None:
            folder = longest.trial_id if longest.files == "." else f"{longest.trial_id}/{longest.files}"
            source = f"clicks per session in {folder}/{RECORDS_FILE}"
            fitted.append(fit_session_lengths(longest.session_lengths, workload, source))
    done = set()
    for trial in trials:
        if trial.result.trial.catalog_size in done:
            continue
        done.add(trial.result.trial.catalog_size)
        workload = _workload(trial.result.trial, spec)
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


def _variant(trial: experiment_pb2.Trial) -> str:
    label = f"{trial.hardware.name}, {trial.runtime}"
    return label + (f", r{trial.repetition}" if trial.repetition > 1 else "")


def _figures(spec: experiment_pb2.ExperimentSpec, trials: Sequence[TrialReport]) -> dict[str, bytes]:
    figures: dict[str, bytes] = {}
    slo = spec.slo
    for trial in trials:
        if trial.stable is not None and trial.series:
            figures[f"ramp-{trial.trial_id}"] = plots.ramp_figure(
                trial.trial_id, trial.verdicts, trial.series, slo.percentile, slo.latency_ms, trial.stable
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
                        _variant(trial.result.trial),
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


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}"


def _rate(value: float) -> str:
    return f"{value:,.1f}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _spec_bullets(experiment: controller_pb2.Experiment) -> tuple[str, ...]:
    spec = experiment.spec
    dims = sorted({(trial.trial.catalog_size, trial.trial.embedding_dim) for trial in experiment.trials})
    hardware = "; ".join(
        f"{option.name} ({option.device}, {_money(option.monthly_cost_usd)}/month per replica, "
        f"{option.replicas or 1} replica{'' if (option.replicas or 1) == 1 else 's'}"
        + (f", {option.cpu_threads} CPU threads" if option.cpu_threads else "")
        + ")"
        for option in spec.hardware
    )
    load, slo, batching = spec.load, spec.slo, spec.batching
    return (
        "Models: " + ", ".join(model.name for model in spec.models),
        "Catalog sizes: "
        + ", ".join(f"{size:,}" for size in spec.catalog_sizes)
        + f"; embedding policy {spec.embedding_policy or defaults.EMBEDDING_POLICY}"
        + (" (" + ", ".join(f"d = {dim} at {size:,} items" for size, dim in dims) + ")" if dims else ""),
        f"Workload: {_describe_workload(experiment)}; sessions capped at "
        f"{defaults.MAX_SESSION_LENGTH} clicks",
        f"Hardware: {hardware}",
        "Runtimes: " + ", ".join(spec.runtimes),
        f"Batching: up to {batching.max_batch_size} requests, at most {batching.max_batch_delay_ms:g} ms "
        f"wait from the oldest request, queue bound {batching.max_queue_size}",
        f"Load: linear ramp to {load.target_rate_per_s:g} requests/s over {load.ramp_duration_s} s, "
        f"hold {load.hold_duration_s} s, request timeout {load.request_timeout_ms} ms, k = {load.k}",
        f"SLO: p{slo.percentile:g} <= {slo.latency_ms:g} ms at {slo.rate_per_s:g} requests/s "
        "(latency from the intended send time)",
        f"Target: {spec.target or defaults.TARGET}; repetitions: {spec.repetitions or 1}",
    )


def _describe_workload(experiment: controller_pb2.Experiment) -> str:
    """Source, seed and which parameterisation of the two distributions the sessions used."""
    spec = experiment.spec
    workload = spec.workload
    text = f"{workload.source or 'synthetic'} (Algorithm 1), seed {workload.seed}"
    if workload.preset:
        text += f", preset {workload.preset}"
    generator = _workload(experiment.trials[0].trial, spec) if experiment.trials else None
    if generator is None:
        return text
    if generator.length_fit is None and generator.clicks_fit is None:
        return (
            f"{text}; classic power-law exponents p(x) ~ x^-alpha (a value is the floor of a "
            f"continuous Pareto draw on x >= 1): alpha_length {generator.alpha_length:g}, "
            f"alpha_clicks {generator.alpha_clicks:g}"
        )
    return f"{text}; {generator.describe()} (floored, at least 1)"


def _errors(summary: object) -> str:
    errors = dict(summary.errors_by_status)  # type: ignore[attr-defined]
    total = sum(errors.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{name} {count}" for name, count in sorted(errors.items())) + ")"


def _stable_cell(stable: StableRate | None) -> str:
    if stable is None:
        return "-"
    if stable.last_stable_tick is None:
        return "never met"
    return f"{stable.rate_per_s:g}" + (" (held throughout)" if stable.held_throughout else "")


def _trial_table(experiment: controller_pb2.Experiment, trials: Sequence[TrialReport]) -> Table:
    header = (
        "trial", "state", "ok/s run", "ok/s hold", "p50 ms", "p90 ms", "p99 ms", "max ms",
        "errors (by status)", "not sent", "SLO (hold)", "highest SLO rate/s", "strict",
    )  # fmt: skip
    rows = []
    for trial in trials:
        result = trial.result
        state = State.Name(result.state).removeprefix("TRIAL_STATE_").lower()
        if not result.HasField("summary"):
            rows.append((trial.trial_id, state, *["-"] * 8, "-", "-", "-"))
            continue
        summary = result.summary
        latency = summary.latency_from_intended
        rows.append(
            (
                trial.trial_id,
                state,
                _rate(summary.achieved_rate_per_s),
                _rate(summary.achieved_hold_rate_per_s),
                _ms(latency.p50_ms),
                _ms(latency.p90_ms),
                _ms(latency.p99_ms),
                _ms(latency.max_ms),
                _errors(summary),
                str(summary.requests_not_sent),
                "met" if result.slo_met else "MISSED",
                _stable_cell(trial.stable)
                if trial.searched_rate_per_s is None
                else f"{trial.searched_rate_per_s:g} (search)",
                _stable_cell(trial.strict),
            )
        )
    return Table(header, tuple(rows))


def _trial_notes(experiment: controller_pb2.Experiment, trials: Sequence[TrialReport]) -> tuple[str, ...]:
    notes = []
    for trial in trials:
        parts = []
        if trial.result.slo_verdict:
            parts.append(f"runner's verdict: {trial.result.slo_verdict}")
        if trial.result.error:
            parts.append(f"error: {trial.result.error}")
        if trial.problem:
            parts.append(trial.problem)
        stable = trial.stable
        if stable is not None:
            if stable.broken_at_tick is not None:
                verdict = next(v for v in trial.verdicts if v.tick == stable.broken_at_tick)
                parts.append(
                    f"SLO broke at tick {verdict.tick} (target {verdict.target_rate_per_s:g}/s: "
                    f"p{experiment.spec.slo.percentile:g} {_ms(verdict.slo_latency_ms)} ms, "
                    f"{verdict.ok} OK of {verdict.offered} called for)"
                )
            if stable.forgiven_ticks:
                parts.append("isolated noisy ticks forgiven: " + ", ".join(map(str, stable.forgiven_ticks)))
        if parts:
            notes.append(f"{trial.trial_id}: " + "; ".join(parts))
    return tuple(notes)


def _search_blocks(trials: Sequence[TrialReport]) -> list[Block]:
    """The probes of `etude search` trials: every constant-rate test, in the order run."""
    rows = []
    for trial in trials:
        for index, probe in enumerate(trial.result.probes, start=1):
            latency = probe.summary.latency_from_intended
            rows.append(
                (
                    trial.trial_id,
                    str(index),
                    f"{probe.rate_per_s:g}",
                    "met" if probe.slo_met else "MISSED",
                    _rate(probe.summary.achieved_hold_rate_per_s),
                    _ms(latency.p90_ms),
                    probe.verdict,
                )
            )
    if not rows:
        return []
    header = ("trial", "probe", "rate/s", "SLO", "ok/s hold", "p90 ms", "verdict")
    return [
        Heading(3, "SLO search probes"),
        Paragraph(
            "Constant-rate probes of `etude search` (its stability rule is in each verdict); a "
            "searched trial's plots and split come from the probe that sustained the highest rate."
        ),
        Table(header, tuple(rows)),
    ]


def _split_table(trials: Sequence[TrialReport]) -> Table:
    header = ("trial", "OK answers", *(f"{part} p50 / p90 ms" for part in SPLIT_PARTS))
    rows = []
    for trial in trials:
        split = trial.split
        if split is None:
            continue
        rows.append(
            (
                trial.trial_id,
                str(split.requests),
                *(f"{_ms(split.p50_ms[part])} / {_ms(split.p90_ms[part])}" for part in SPLIT_PARTS),
            )
        )
    return Table(header, tuple(rows))


def _trace_split_blocks(trials: Sequence[TrialReport]) -> list[Block]:
    """The split measured by the sampled OpenTelemetry traces, next to the timing-based one."""
    traced = [trial for trial in trials if trial.traces is not None]
    blocks: list[Block] = [Heading(3, "Latency split from traces")]
    if not traced:
        return [
            *blocks,
            Paragraph("No trace files: tracing was off (ETUDE_TRACE_SAMPLE_RATIO=0) or unavailable."),
        ]
    header = (
        "trial",
        "traced OK",
        *(f"{part} p50 / p90 ms" for part in SPLIT_PARTS),
        "max |trace - timing| ms",
    )
    rows = []
    notes = []
    for trial in traced:
        traces = trial.traces
        assert traces is not None
        split = traces.split
        parts = (
            (f"{_ms(split.p50_ms[part])} / {_ms(split.p90_ms[part])}" for part in SPLIT_PARTS)
            if split is not None
            else ("-" for _ in SPLIT_PARTS)
        )
        worst = max(traces.max_difference_ms.values(), default=0.0)
        rows.append((trial.trial_id, str(traces.matched), *parts, f"{worst:.3f}" if traces.matched else "-"))
        unread = f" ({traces.unreadable_lines} unreadable lines)" if traces.unreadable_lines else ""
        notes.append(f"{trial.trial_id}: {traces.agreement()}; {traces.spans} spans{unread}.")
    blocks += [
        Paragraph(
            "The same parts measured by the spans of the sampled requests (a fraction set by "
            "ETUDE_TRACE_SAMPLE_RATIO or OTEL_TRACES_SAMPLER_ARG, default 1%): send delay from the "
            "client span's intended-send attribute, network and serialisation = client span from "
            "actual send - server span, queueing and inference from the server span's children. "
            "Each traced request is joined with its own records.csv row and its parts compared "
            "with the timing fields; the last column is the largest difference of any part."
        ),
        Table(header, tuple(rows)),
        Bullets(tuple(notes)),
    ]
    return blocks


def _fit_table(fitted: Sequence[FittedExponent]) -> Table:
    rows = []
    for exponent in fitted:
        error = exponent.relative_error
        rows.append(
            (
                exponent.name,
                exponent.requested,
                "-" if exponent.expected is None else f"{exponent.expected:.4f}",
                "-" if exponent.fitted is None else f"{exponent.fitted:.4f}",
                "-" if error is None else f"{100 * error:+.1f}%",
                f"{exponent.sample_size:,}",
                exponent.source,
            )
        )
    header = (
        "quantity",
        "requested",
        "expected alpha",
        "fitted alpha",
        "difference",
        "sample",
        "fitted from",
    )
    return Table(header, tuple(rows))


def _deployment_table(rows: Sequence[DeploymentRow]) -> Table:
    header = ("scenario", "hardware", "replicas", "cost/month", "basis", "cheapest", "note")
    cells = []
    bold = set()
    for index, row in enumerate(rows):
        if row.cheapest:
            bold.add(index)
        cells.append(
            (
                row.scenario.label,
                row.hardware,
                "-" if row.replicas is None else str(row.replicas),
                _money(row.monthly_cost_usd),
                row.basis,
                "cheapest" if row.cheapest else "",
                row.note,
            )
        )
    return Table(header, tuple(cells), frozenset(bold))


def _blocks(
    experiment: controller_pb2.Experiment,
    trials: Sequence[TrialReport],
    fitted: Sequence[FittedExponent],
    deployments: Sequence[DeploymentRow],
    figures: dict[str, bytes],
) -> list[Block]:
    spec = experiment.spec
    slo = spec.slo
    state = controller_pb2.ExperimentState.Name(experiment.state).removeprefix("EXPERIMENT_STATE_").lower()
    blocks: list[Block] = [
        Heading(1, f"Etude report: {experiment.experiment_id}"),
        Paragraph(
            f"State: {state}."
            + (f" {experiment.error}." if experiment.error else "")
            + f" Results: {experiment.results_uri}"
        ),
        Heading(2, "Experiment"),
        Bullets(_spec_bullets(experiment)),
        Heading(2, "Workload: requested and fitted exponents"),
    ]
    if fitted:
        blocks += [
            Paragraph(
                "Maximum-likelihood fits of the classic exponent alpha of floor(Pareto(alpha)) "
                "(etude.services.workload.generator.fit_power_law_exponent), values at the generator's "
                "caps read as censored (x_max). Session lengths are the clicks replayed per session "
                "in records.csv (sessions still being replayed when the run ended count as shorter). "
                "records.csv holds no item ids, so item popularity is fitted on the click counts "
                "regenerated from the seed (Algorithm 1, line 7: what the sessions sampled items "
                "from). 'expected alpha' is the requested exponent, or, for a scipy.stats.powerlaw "
                f"fit, the fit of {REFERENCE_DRAWS:,} draws (or C counts) of the requested "
                "distribution from an independent seed."
            ),
            _fit_table(fitted),
        ]
    else:
        blocks.append(Paragraph("No fit: no trial left records, or the workload is not synthetic."))
    blocks += [
        Heading(2, "Trials"),
        Paragraph(
            "Latencies are from the intended send time over the OK answers of the whole run (HDR "
            "histograms, 3 significant digits); ok/s = successful answers per second; not sent = "
            "requests the ramp called for that backpressure held back. 'SLO (hold)' is the runner's "
            "verdict on the hold phase; 'highest SLO rate/s' follows the stability rule below."
        ),
        _trial_table(experiment, trials),
        Bullets(_trial_notes(experiment, trials)),
        Paragraph(
            "Stability rule. " + STABILITY_RULE.format(percentile=slo.percentile, latency_ms=slo.latency_ms)
        ),
        *_search_blocks(trials),
        Heading(2, "Deployment options (Table I)"),
        Paragraph(
            f"Per scenario (model x catalog size x runtime): each hardware option with the replica "
            f"count that meets p{slo.percentile:g} <= {slo.latency_ms:g} ms at {slo.rate_per_s:g} "
            "requests/s, and its monthly cost (replicas x monthly cost per replica); the cheapest is "
            "marked (bold). 'measured': the runner's hold-phase verdict met the SLO with that many "
            "replicas. 'extrapolated': ceil(required rate / highest per-replica SLO rate of the ramp), "
            "and at least one replica more than were measured missing it; this assumes replicas scale "
            "perfectly, which they do not quite (load balancing and shared network cost something). "
            "With repetitions, an option is measured as meeting the SLO only if every repetition "
            "did, and the lowest highest-SLO-rate is used."
        ),
        _deployment_table(deployments),
        Heading(2, "Latency split"),
        Paragraph(
            "From the per-request server timing of the OK answers: send delay = actual - intended "
            "send (client late or backpressure); network and serialisation = latency from actual "
            "send - server total; server other = server total - queueing - inference. The parts "
            "of each request add up to its latency from intended send, but percentiles of the "
            "parts do not add up to the percentile of the whole."
        ),
        _split_table(trials),
    ]
    if "split" in figures:
        blocks.append(Image("split", "p50 and p90 of each part of the latency, per trial"))
    blocks += _trace_split_blocks(trials)
    blocks.append(Heading(2, "Latency against offered rate"))
    rate_figures = [name for name in figures if name.startswith("rate-")]
    for name in rate_figures:
        blocks.append(
            Image(
                name,
                f"p{slo.percentile:g} of the OK answers sent in each ramp tick against the tick's "
                f"target rate ({int(name.removeprefix('rate-c')):,} items); colour = model, line style = "
                "hardware and runtime",
            )
        )
    if not rate_figures:
        blocks.append(Paragraph("No trial left records to plot."))
    blocks.append(Heading(2, "Ramps"))
    for trial in trials:
        name = f"ramp-{trial.trial_id}"
        if name in figures:
            blocks.append(
                Image(
                    name,
                    f"{trial.trial_id}: latency percentiles of the requests sent in each tick "
                    "(top) and target vs achieved rate (bottom); the dotted line marks the tick that "
                    "reached the highest SLO rate",
                )
            )
    return blocks


def _markdown_table(table: Table) -> list[str]:
    def cell(text: str, bold: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if bold and text else text

    lines = ["| " + " | ".join(table.header) + " |", "|" + "|".join(" --- " for _ in table.header) + "|"]
    for index, row in enumerate(table.rows):
        lines.append("| " + " | ".join(cell(text, index in table.bold_rows) for text in row) + " |")
    return lines


def render_markdown(blocks: Iterable[Block]) -> str:
    """Markdown text of the blocks; images are named (they are embedded in report.html only)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            if block.items:
                lines += [*(f"- {item}" for item in block.items), ""]
        elif isinstance(block, Table):
            lines += [*_markdown_table(block), ""]
        elif isinstance(block, Image):
            lines += [f"*Plot (in {REPORT_HTML}): {block.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.cheapest td { font-weight: bold; background: #eef8ee; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def render_html(blocks: Iterable[Block], figures: dict[str, bytes], title: str) -> str:
    """A self-contained HTML page: inline CSS, plots as base64 PNG data URIs, nothing fetched."""
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            if block.items:
                parts.append("<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in block.header))
            parts.append("</tr></thead><tbody>")
            for index, row in enumerate(block.rows):
                css = ' class="cheapest"' if index in block.bold_rows else ""
                parts.append(f"<tr{css}>" + "".join(f"<td>{escape(text)}</td>" for text in row) + "</tr>")
            parts.append("</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(figures[block.name]).decode("ascii")
            parts.append(
                f'<figure><img alt="{escape(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{escape(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
