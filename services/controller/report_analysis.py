"""What the experiment report says, computed from a finished experiment's stored files.

Per-tick SLO verdicts and the highest rate at which the SLO held during the ramp, the latency
split, the workload's fitted exponents and the deployment table (the ETUDE paper's Table I).
Plain numpy over what the result store holds; no plotting and no formatting here.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from google.protobuf import json_format

from etude.v1 import controller_pb2, experiment_pb2

from ..workload.generator import (
    MAX_CLICK_COUNT,
    ItemPopularity,
    ScipyPowerLaw,
    SyntheticWorkload,
    fit_power_law_exponent,
)
from .slo import RATE_TOLERANCE
from .store import ResultStore

EXPERIMENT_FILE = "experiment.json"
OK = "OK"

# The parts of one request's latency from its intended send time; they add up to it exactly
# (network and serialisation is clipped at 0, as the load generator does).
SPLIT_PARTS = (
    "send delay (client)",  # actual send - intended send: a late client or backpressure
    "network and serialisation",  # latency from actual send - server total
    "server other",  # server total - queue - inference: (de)serialisation, handler
    "queueing",  # waiting in the batcher
    "inference",  # the batch's model call
)


class ReportInputError(ValueError):
    """The result store does not hold what a report needs (names the missing or bad file)."""


def load_experiment(store: ResultStore, experiment_id: str) -> controller_pb2.Experiment:
    """The stored etude.v1.Experiment of `experiment_id`; raises ReportInputError."""
    relative = f"{experiment_id}/{EXPERIMENT_FILE}"
    if not store.exists(relative):
        raise ReportInputError(f"{store.uri(relative)}: not found (is this an experiment folder?)")
    try:
        return json_format.Parse(store.read_text(relative), controller_pb2.Experiment())
    except json_format.ParseError as error:
        raise ReportInputError(f"{store.uri(relative)}: not an etude.v1.Experiment: {error}") from error


@dataclass(frozen=True, eq=False)
class Records:
    """records.csv as columns (one entry per request sent); times in microseconds."""

    tick: np.ndarray  # int64: the tick the request was sent in
    session_id: np.ndarray  # str
    click_index: np.ndarray  # int64
    status: np.ndarray  # str
    latency_from_intended_us: np.ndarray  # int64
    latency_from_actual_us: np.ndarray  # int64
    queue_us: np.ndarray  # int64
    inference_us: np.ndarray  # int64
    server_total_us: np.ndarray  # int64

    @property
    def ok(self) -> np.ndarray:
        return self.status == OK

    def __len__(self) -> int:
        return int(self.tick.size)


_INT_COLUMNS = (
    "tick",
    "click_index",
    "latency_from_intended_us",
    "latency_from_actual_us",
    "queue_us",
    "inference_us",
    "server_total_us",
)


def parse_records(text: str) -> Records:
    """Parses records.csv (services/loadgen/records.py RECORD_FIELDS); extra columns are ignored."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ReportInputError("records.csv: empty file (no header)")
    missing = [name for name in (*_INT_COLUMNS, "session_id", "status") if name not in header]
    if missing:
        raise ReportInputError(f"records.csv: missing columns {missing}")
    rows = list(reader)
    columns: list[tuple[str, ...]] = list(zip(*rows, strict=True)) if rows else [()] * len(header)
    position = {name: index for index, name in enumerate(header)}

    def integers(name: str) -> np.ndarray:
        return np.array(columns[position[name]], dtype=np.int64)

    def strings(name: str) -> np.ndarray:
        return np.array(columns[position[name]], dtype=str)

    return Records(
        tick=integers("tick"),
        session_id=strings("session_id"),
        click_index=integers("click_index"),
        status=strings("status"),
        latency_from_intended_us=integers("latency_from_intended_us"),
        latency_from_actual_us=integers("latency_from_actual_us"),
        queue_us=integers("queue_us"),
        inference_us=integers("inference_us"),
        server_total_us=integers("server_total_us"),
    )


@dataclass(frozen=True)
class SeriesTick:
    """One row of series.csv: what the load generator saw during one second."""

    tick: int
    target_rate_per_s: float
    sent: int
    completed: int
    ok: int  # OK answers that arrived during this tick (achieved throughput)
    errors: int
    not_sent: int
    in_flight: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def offered(self) -> int:
        """The whole requests the ramp called for in this tick (sent or not)."""
        return self.sent + self.not_sent


def parse_series(text: str) -> list[SeriesTick]:
    ticks = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            ticks.append(
                SeriesTick(
                    tick=int(row["tick"]),
                    target_rate_per_s=float(row["target_rate_per_s"]),
                    sent=int(row["sent"]),
                    completed=int(row["completed"]),
                    ok=int(row["ok"]),
                    errors=int(row["errors"]),
                    not_sent=int(row["not_sent"]),
                    in_flight=int(row["in_flight"]),
                    p50_ms=float(row["p50_ms"]),
                    p90_ms=float(row["p90_ms"]),
                    p99_ms=float(row["p99_ms"]),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ReportInputError(f"series.csv: bad row {row}: {error}") from error
    return ticks


STABILITY_RULE = (
    "A tick (one second of the ramp or hold) meets the SLO when (a) the p{percentile:g} of latency "
    "from the intended send time over the requests SENT in that tick is <= {latency_ms:g} ms, a "
    "failed request counting as infinitely slow, and (b) those requests got OK answers for at least "
    f"{100 * (1 - RATE_TOLERANCE):g}% of the requests the ramp called for in the tick (requests "
    "held back by backpressure count as missing). Ticks that called for no request are skipped. "
    "A failing tick is forgiven as noise only when it is isolated: the tick right after it meets "
    "the rule. The stable region ends at the first failing tick that is not forgiven (two failing "
    "ticks in a row, or a failing last tick); the highest SLO rate is the highest target rate of a "
    "tick in the stable region that met the rule, 0 when none did. 'strict' forgives nothing: "
    "every tick up to and including the first tick at that rate met the rule. The value is bounded "
    "by the experiment's target rate: a trial that held throughout was not tried higher."
)


@dataclass(frozen=True)
class TickVerdict:
    """One tick judged by the stability rule, with its latency percentiles for the plots."""

    tick: int
    target_rate_per_s: float
    offered: int
    sent: int
    ok: int  # OK answers to the requests sent in this tick (whenever they arrived)
    slo_latency_ms: float  # SLO percentile, failures as inf; nan when nothing was sent
    p50_ms: float  # percentiles over the OK answers only; nan when there are none
    p90_ms: float
    p99_ms: float
    ok_slo_latency_ms: float  # the SLO percentile over the OK answers only (for plots)
    met: bool | None  # None: the tick called for no request


def tick_verdicts(
    series: Sequence[SeriesTick], records: Records, percentile: float, latency_ms: float
) -> list[TickVerdict]:
    """Judges every tick of `series` against the SLO by the rule in STABILITY_RULE."""
    order = np.argsort(records.tick, kind="stable")
    sorted_ticks = records.tick[order]
    ok = records.ok[order]
    latency_ms_all = records.latency_from_intended_us[order] / 1000.0
    with_failures = np.where(ok, latency_ms_all, math.inf)
    verdicts = []
    for row in series:
        start, end = np.searchsorted(sorted_ticks, [row.tick, row.tick + 1])
        tick_ok = ok[start:end]
        ok_count = int(np.count_nonzero(tick_ok))
        nan = math.nan
        slo_latency = nan
        if end > start:
            slo_latency = float(np.percentile(with_failures[start:end], percentile, method="higher"))
        p50 = p90 = p99 = ok_slo = nan
        if ok_count:
            p50, p90, p99, ok_slo = (
                float(value)
                for value in np.percentile(latency_ms_all[start:end][tick_ok], [50, 90, 99, percentile])
            )
        met: bool | None = None
        if row.offered > 0:
            met = bool(
                end > start
                and slo_latency <= latency_ms
                and ok_count >= (1 - RATE_TOLERANCE) * row.offered - 1e-9
            )
        verdicts.append(
            TickVerdict(
                tick=row.tick,
                target_rate_per_s=row.target_rate_per_s,
                offered=row.offered,
                sent=int(end - start),
                ok=ok_count,
                slo_latency_ms=slo_latency,
                p50_ms=p50,
                p90_ms=p90,
                p99_ms=p99,
                ok_slo_latency_ms=ok_slo,
                met=met,
            )
        )
    return verdicts


@dataclass(frozen=True)
class StableRate:
    """The highest target rate at which the SLO held, by the rule in STABILITY_RULE."""

    rate_per_s: float
    last_stable_tick: int | None  # the tick that reached `rate_per_s`; None when no tick met
    broken_at_tick: int | None  # the first failing tick not forgiven; None: held throughout
    forgiven_ticks: tuple[int, ...] = ()

    @property
    def held_throughout(self) -> bool:
        return self.broken_at_tick is None and self.last_stable_tick is not None


def highest_stable_rate(verdicts: Sequence[TickVerdict], *, forgive_isolated: bool = True) -> StableRate:
    judged = [verdict for verdict in verdicts if verdict.met is not None]
    best_rate, best_tick = 0.0, None
    forgiven: list[int] = []
    for index, verdict in enumerate(judged):
        if verdict.met:
            if verdict.target_rate_per_s > best_rate:
                best_rate, best_tick = verdict.target_rate_per_s, verdict.tick
            continue
        previous_failed = index > 0 and not judged[index - 1].met
        next_met = index + 1 < len(judged) and bool(judged[index + 1].met)
        if forgive_isolated and not previous_failed and next_met:
            forgiven.append(verdict.tick)
            continue
        return StableRate(best_rate, best_tick, verdict.tick, tuple(forgiven))
    return StableRate(best_rate, best_tick, None, tuple(forgiven))


@dataclass(frozen=True)
class LatencySplit:
    """p50 and p90 (ms) of each part of the latency from intended send, over the OK answers."""

    requests: int
    p50_ms: dict[str, float]
    p90_ms: dict[str, float]


def latency_split(records: Records) -> LatencySplit | None:
    """The split of SPLIT_PARTS from the per-request server timing; None without OK answers."""
    ok = records.ok
    if not np.any(ok):
        return None
    intended = records.latency_from_intended_us[ok]
    actual = records.latency_from_actual_us[ok]
    server = records.server_total_us[ok]
    queue = records.queue_us[ok]
    inference = records.inference_us[ok]
    parts_us = {
        SPLIT_PARTS[0]: intended - actual,
        SPLIT_PARTS[1]: np.maximum(actual - server, 0),
        SPLIT_PARTS[2]: np.maximum(server - queue - inference, 0),
        SPLIT_PARTS[3]: queue,
        SPLIT_PARTS[4]: inference,
    }
    p50 = {name: float(np.percentile(values, 50)) / 1000.0 for name, values in parts_us.items()}
    p90 = {name: float(np.percentile(values, 90)) / 1000.0 for name, values in parts_us.items()}
    return LatencySplit(int(np.count_nonzero(ok)), p50, p90)


def session_lengths(records: Records) -> np.ndarray:
    """Clicks replayed per session (highest click index + 1); int64, one entry per session."""
    if len(records) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(records.session_id, return_inverse=True)
    lengths = np.zeros(int(inverse.max()) + 1, dtype=np.int64)
    np.maximum.at(lengths, inverse, records.click_index + 1)
    return lengths


# Draws of the requested distribution fitted as the reference when it is not given as an
# exponent (a scipy.stats.powerlaw fit has no alpha to compare with).
REFERENCE_DRAWS = 200_000


@dataclass(frozen=True)
class FittedExponent:
    """A classic power-law exponent fitted back from what was generated, next to what was asked."""

    name: str
    requested: str  # the requested distribution, in words
    expected: float | None  # the exponent the fit should find (None: unknown)
    fitted: float | None  # None: nothing to fit (inf: no tail at all)
    sample_size: int
    source: str  # where the values came from, in words

    @property
    def relative_error(self) -> float | None:
        if self.fitted is None or self.expected is None or not math.isfinite(self.fitted):
            return None
        return self.fitted / self.expected - 1


def _requested(alpha: float | None, fit: ScipyPowerLaw | None) -> tuple[str, float | None]:
    if fit is not None:
        return f"scipy.stats.powerlaw(a={fit.a:g}, loc={fit.loc:g}, scale={fit.scale:g})", None
    return f"alpha {alpha:g}", alpha


def fit_session_lengths(lengths: np.ndarray, workload: SyntheticWorkload, source: str) -> FittedExponent:
    """MLE of the classic exponent of replayed session lengths (at the cap: read as censored)."""
    requested, expected = _requested(workload.alpha_length, workload.length_fit)
    cap = workload.max_session_length
    if expected is None:
        reference = workload.draw_session_lengths(np.random.default_rng(0), REFERENCE_DRAWS)
        expected = fit_power_law_exponent(reference, x_max=cap)
    if lengths.size == 0:
        return FittedExponent("session length", requested, expected, None, 0, source)
    fitted = fit_power_law_exponent(lengths, x_max=max(cap, int(lengths.max())))
    return FittedExponent("session length", requested, expected, fitted, int(lengths.size), source)


def fit_click_counts(workload: SyntheticWorkload) -> FittedExponent:
    """MLE of the classic exponent of the C item click counts (Algorithm 1, line 7).

    records.csv holds no item ids, so the counts are regenerated: the same deterministic draw
    (catalog size, statistics and seed) that the load generator's sessions sampled items from.
    """
    requested, expected = _requested(workload.alpha_clicks, workload.clicks_fit)
    if expected is None:
        reference = workload.draw_click_counts(np.random.default_rng(0))
        expected = fit_power_law_exponent(reference, x_max=MAX_CLICK_COUNT)
    counts = ItemPopularity.for_workload(workload).click_counts
    fitted = fit_power_law_exponent(counts, x_max=MAX_CLICK_COUNT)
    source = f"the {workload.catalog_size:,} item click counts regenerated from seed {workload.seed}"
    return FittedExponent("item popularity", requested, expected, fitted, workload.catalog_size, source)


@dataclass(frozen=True)
class Scenario:
    """One row group of the deployment table: what is deployed, whatever the hardware."""

    model: str
    catalog_size: int
    runtime: str

    @property
    def label(self) -> str:
        return f"{self.model}, {self.catalog_size:,} items, {self.runtime}"


@dataclass(frozen=True)
class HardwareOutcome:
    """What the trials of one scenario on one hardware option showed (over its repetitions)."""

    scenario: Scenario
    hardware: experiment_pb2.HardwareOption
    measured_replicas: int
    measured_met: bool  # the runner's hold-phase verdict, for every repetition
    sustained_rate_per_s: float  # highest SLO rate of the ramp, the lowest over repetitions
    failure: str = ""  # why a trial produced no measurement


@dataclass(frozen=True)
class DeploymentRow:
    scenario: Scenario
    hardware: str
    replicas: int | None  # None: no replica count meets the SLO
    monthly_cost_usd: float | None
    basis: str  # "measured", "extrapolated from 1 replica", or why it does not meet the SLO
    meets_slo: bool
    note: str = ""
    cheapest: bool = field(default=False, compare=False)


def replicas_needed(required_rate_per_s: float, sustained_rate_per_s: float, measured_replicas: int) -> int:
    """ceil(required / per-replica rate), the per-replica rate being sustained / measured replicas.

    Assumes replicas add capacity linearly: optimistic (a balancer and shared network cost
    something), which is why such rows are marked as extrapolated.
    """
    if sustained_rate_per_s <= 0:
        raise ValueError("sustained_rate_per_s must be > 0")
    ratio = required_rate_per_s * measured_replicas / sustained_rate_per_s
    # A ratio within rounding of a whole number is that number, not the next one.
    return max(1, math.ceil(ratio - 1e-9))


def deployment_rows(outcomes: Sequence[HardwareOutcome], required_rate_per_s: float) -> list[DeploymentRow]:
    """Table I: per scenario, each hardware option's replica count meeting the SLO and its cost.

    Measured: the runner's verdict says the measured replica count met the SLO. Otherwise the
    count is extrapolated from the highest rate the ramp sustained within the SLO, and at least
    one more replica than the count that was measured missing it. An option whose ramp never
    met the SLO gets a row saying so. The cheapest row meeting the SLO of each scenario is marked.
    """
    rows: list[DeploymentRow] = []
    for outcome in outcomes:
        cost = outcome.hardware.monthly_cost_usd
        measured = outcome.measured_replicas
        plural = "" if measured == 1 else "s"
        if outcome.failure:
            rows.append(
                DeploymentRow(
                    outcome.scenario,
                    outcome.hardware.name,
                    None,
                    None,
                    "no measurement",
                    False,
                    outcome.failure,
                )
            )
        elif outcome.measured_met:
            note = f"sustained {outcome.sustained_rate_per_s:g}/s within the SLO during the ramp"
            rows.append(
                DeploymentRow(
                    outcome.scenario, outcome.hardware.name, measured, measured * cost, "measured", True, note
                )
            )
        elif outcome.sustained_rate_per_s > 0:
            replicas = max(
                replicas_needed(required_rate_per_s, outcome.sustained_rate_per_s, measured), measured + 1
            )
            note = (
                f"{measured} replica{plural} measured: SLO missed; held "
                f"{outcome.sustained_rate_per_s / measured:g}/s per replica during the ramp"
            )
            rows.append(
                DeploymentRow(
                    outcome.scenario,
                    outcome.hardware.name,
                    replicas,
                    replicas * cost,
                    f"extrapolated from {measured} replica{plural}",
                    True,
                    note,
                )
            )
        else:
            rows.append(
                DeploymentRow(
                    outcome.scenario,
                    outcome.hardware.name,
                    None,
                    None,
                    "does not meet the SLO",
                    False,
                    "the SLO was not met at any rate of the ramp",
                )
            )
    return _mark_cheapest(rows)


def _mark_cheapest(rows: list[DeploymentRow]) -> list[DeploymentRow]:
    best: dict[Scenario, int] = {}
    for index, row in enumerate(rows):
        if not row.meets_slo or row.monthly_cost_usd is None:
            continue
        # Ties go to a measured row, then to fewer replicas.
        key = (row.monthly_cost_usd, row.basis != "measured", row.replicas or 0)
        current = best.get(row.scenario)
        if current is None:
            best[row.scenario] = index
            continue
        other = rows[current]
        if key < (other.monthly_cost_usd or 0.0, other.basis != "measured", other.replicas or 0):
            best[row.scenario] = index
    cheapest = set(best.values())
    return [
        DeploymentRow(
            row.scenario,
            row.hardware,
            row.replicas,
            row.monthly_cost_usd,
            row.basis,
            row.meets_slo,
            row.note,
            cheapest=index in cheapest,
        )
        for index, row in enumerate(rows)
    ]
