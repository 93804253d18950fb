"""What a run's records and series say: per-tick SLO verdicts, the highest rate at which the SLO
held during the ramp, the split of latency into its parts, and the sessions replayed.

Plain numpy over the columns the results layer reads; no plotting and no formatting here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..results.records import TIMING_COLUMNS, RecordColumns
from ..results.series import SeriesRow
from .slo import RATE_TOLERANCE

# The parts of one request's latency from its intended send time; they add up to it exactly
# (network and serialisation is clipped at 0, as the load generator does).
SPLIT_PARTS = (
    "send delay (client)",  # actual send - intended send: a late client or backpressure
    "network and serialisation",  # latency from actual send - server total
    "server other",  # server total - queue - inference: (de)serialisation, handler
    "queueing",  # waiting in the batcher
    "inference",  # the batch's model call
)


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
    series: Sequence[SeriesRow], records: RecordColumns, percentile: float, latency_ms: float
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


def split_parts_us(records: RecordColumns) -> dict[str, np.ndarray]:
    """SPLIT_PARTS (us) of every row of `records`, from its timing fields."""
    intended = records.latency_from_intended_us
    actual = records.latency_from_actual_us
    server = records.server_total_us
    queue = records.queue_us
    inference = records.inference_us
    return {
        SPLIT_PARTS[0]: intended - actual,
        SPLIT_PARTS[1]: np.maximum(actual - server, 0),
        SPLIT_PARTS[2]: np.maximum(server - queue - inference, 0),
        SPLIT_PARTS[3]: queue,
        SPLIT_PARTS[4]: inference,
    }


def split_of(parts_us: dict[str, np.ndarray]) -> LatencySplit:
    """p50 and p90 of each part (us values, at least one request)."""
    p50 = {name: float(np.percentile(values, 50)) / 1000.0 for name, values in parts_us.items()}
    p90 = {name: float(np.percentile(values, 90)) / 1000.0 for name, values in parts_us.items()}
    return LatencySplit(len(next(iter(parts_us.values()))), p50, p90)


def latency_split(records: RecordColumns) -> LatencySplit | None:
    """The split of SPLIT_PARTS from the per-request server timing; None without OK answers."""
    ok = records.ok
    if not np.any(ok):
        return None
    return split_of(split_parts_us(records.select(ok)))


@dataclass(frozen=True)
class Timings:
    """p50 and p90 (ms) of every duration column of records.csv over the OK answers."""

    requests: int
    p50_ms: dict[str, float]
    p90_ms: dict[str, float]


def timings(records: RecordColumns) -> Timings | None:
    """Timings of the TIMING_COLUMNS of records.csv (every `_us` column); None without OK answers."""
    ok = records.ok
    if not np.any(ok):
        return None
    values = {name: records.column(name)[ok] for name in TIMING_COLUMNS}
    return Timings(
        int(np.count_nonzero(ok)),
        {name: float(np.percentile(column, 50)) / 1000.0 for name, column in values.items()},
        {name: float(np.percentile(column, 90)) / 1000.0 for name, column in values.items()},
    )


def replayed_clicks(records: RecordColumns) -> np.ndarray:
    """int64 [n, 2]: each request of a replay as (the session's 1-based position in the log, the
    click's index in it); merged runs suffix session ids "#i", which is dropped."""
    if len(records) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    positions = np.char.partition(records.session_id.astype(str), "#")[:, 0].astype(np.int64)
    return np.stack([positions, records.click_index.astype(np.int64)], axis=1)


def session_lengths(records: RecordColumns) -> np.ndarray:
    """Clicks replayed per session (highest click index + 1); int64, one entry per session."""
    if len(records) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(records.session_id, return_inverse=True)
    lengths = np.zeros(int(inverse.max()) + 1, dtype=np.int64)
    np.maximum.at(lengths, inverse, records.click_index + 1)
    return lengths
