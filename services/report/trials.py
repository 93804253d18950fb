"""One trial in the report: what its stored series and records say (SLO verdict per tick, the
highest stable rate, the latency split, the traces join), read through the results layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import structlog

from etude.v1 import experiment_pb2

from ..results.errors import ResultsError
from ..results.layout import RECORDS_FILE, SERIES_FILE, Layout, in_folder, probe_folder
from ..results.records import parse_records
from ..results.series import SeriesRow, parse_series
from ..results.store import ResultStore
from .analysis import (
    BatchSizes,
    LatencyDistribution,
    LatencySplit,
    StableRate,
    TickVerdict,
    Timings,
    batch_sizes,
    highest_stable_rate,
    latency_distribution,
    latency_split,
    replayed_clicks,
    session_lengths,
    tick_verdicts,
    timings,
)
from .traces import TraceSplit, analyse_trial_traces

_log = structlog.get_logger()

State = experiment_pb2.TrialState


@dataclass(frozen=True, eq=False)
class TrialReport:
    """One trial's result with what its stored series and records say."""

    result: experiment_pb2.TrialResult
    series: list[SeriesRow] = field(default_factory=list)
    verdicts: list[TickVerdict] = field(default_factory=list)
    stable: StableRate | None = None  # None: no series/records to judge
    strict: StableRate | None = None
    split: LatencySplit | None = None
    # The OK answers' latency at percentiles approaching 100, and the batches that answered them.
    distribution: LatencyDistribution | None = None
    batch_sizes: BatchSizes | None = None
    # p50/p90 of every duration column of records.csv (None: no OK answer).
    timings: Timings | None = None
    # The same split from the sampled traces, and how closely it agrees (None: no traces).
    traces: TraceSplit | None = None
    session_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # A replay's requests as (session's position in the log, click index); empty otherwise.
    replayed: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
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


def analysed_folder(result: experiment_pb2.TrialResult) -> str:
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
    return probe_folder(chosen + 1, result.probes[chosen].rate_per_s)


def analyse_trial(
    store: ResultStore,
    layout: Layout,
    result: experiment_pb2.TrialResult,
    spec: experiment_pb2.ExperimentSpec,
) -> TrialReport:
    """What the trial's stored series and records say (blocking reads)."""
    files = analysed_folder(result)
    folder = layout.run(result.trial.trial_id, files)
    series_path, records_path = in_folder(folder, SERIES_FILE), in_folder(folder, RECORDS_FILE)
    if not (store.exists(series_path) and store.exists(records_path)):
        state = State.Name(result.state).removeprefix("TRIAL_STATE_").lower()
        return TrialReport(result, problem=f"no {SERIES_FILE}/{RECORDS_FILE} (trial {state})", files=files)
    try:
        series = parse_series(store.read_text(series_path), store.uri(series_path))
        records = parse_records(store.read_text(records_path), store.uri(records_path))
    except ResultsError as error:
        return TrialReport(result, problem=str(error), files=files)
    verdicts = tick_verdicts(series, records, spec.slo.percentile, spec.slo.latency_ms)
    return TrialReport(
        result,
        series=series,
        verdicts=verdicts,
        stable=highest_stable_rate(verdicts),
        strict=highest_stable_rate(verdicts, forgive_isolated=False),
        split=latency_split(records),
        distribution=latency_distribution(records),
        batch_sizes=batch_sizes(records),
        timings=timings(records),
        traces=_trace_split(store, layout, result.trial.trial_id, folder),
        session_lengths=session_lengths(records),
        replayed=replayed_clicks(records) if spec.workload.source == "replay" else np.zeros((0, 2), np.int64),
        files=files,
    )


def _trace_split(store: ResultStore, layout: Layout, trial_id: str, folder: str) -> TraceSplit | None:
    """The trace-based split; a trace file that cannot be read costs the report this section only."""
    try:
        return analyse_trial_traces(store, layout, trial_id, folder)
    except (OSError, ValueError) as error:
        _log.warning("trace_split_failed", folder=folder, error=str(error))
        return None
