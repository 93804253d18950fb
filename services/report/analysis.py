"""What a run's records and series say: per-tick SLO verdicts, the highest rate at which the SLO
held during the ramp, the split of latency into its parts, and the sessions replayed.

Plain numpy over the columns the results layer reads; no plotting and no formatting here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    """p50, p90 and mean (ms) of each part of the latency from intended send, over the OK answers.

    Means add up (percentiles do not): the parts' means sum to the mean latency from intended
    send, less `untracked_ms`, what clipping a part at zero (clocks of two processes) added.
    """

    requests: int
    p50_ms: dict[str, float]
    p90_ms: dict[str, float]
    mean_ms: dict[str, float] = field(default_factory=dict)
    mean_total_ms: float = math.nan  # mean latency from intended send; nan when not known

    @property
    def untracked_ms(self) -> float:
        """Mean total minus the sum of the parts' means (clipping; nan when the total is unknown)."""
        return self.mean_total_ms - sum(self.mean_ms.values())

    # A router's bytes to and from its catalog shards per request (0 unsharded).
    shard_wire_bytes_p50: float = 0.0


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


def split_of(parts_us: dict[str, np.ndarray], total_us: np.ndarray | None = None) -> LatencySplit:
    """p50, p90 and mean of each part (us values, at least one request); `total_us`: each
    request's whole latency, whose mean the parts' means are checked against."""
    p50 = {name: float(np.percentile(values, 50)) / 1000.0 for name, values in parts_us.items()}
    p90 = {name: float(np.percentile(values, 90)) / 1000.0 for name, values in parts_us.items()}
    mean = {name: float(np.mean(values)) / 1000.0 for name, values in parts_us.items()}
    mean_total_ms = math.nan if total_us is None else float(np.mean(total_us)) / 1000.0
    return LatencySplit(len(next(iter(parts_us.values()))), p50, p90, mean, mean_total_ms)


def latency_split(records: RecordColumns) -> LatencySplit | None:
    """The split of SPLIT_PARTS from the per-request server timing; None without OK answers."""
    ok = records.ok
    if not np.any(ok):
        return None
    answered = records.select(ok)
    return split_of(split_parts_us(answered), answered.latency_from_intended_us)


# The percentiles of a latency distribution plot (HdrHistogram's percentile distribution):
# ever closer to 100%, evenly on a log(1 / (1 - p)) axis, as far as the sample reaches.
DISTRIBUTION_STEPS_PER_DECADE = 20


@dataclass(frozen=True)
class LatencyDistribution:
    """Latency from intended send (ms) at percentiles approaching 100, over the OK answers."""

    requests: int
    percentiles: tuple[float, ...]
    latencies_ms: tuple[float, ...]
    max_ms: float


def latency_distribution(records: RecordColumns) -> LatencyDistribution | None:
    """The percentile distribution of the OK answers' latency; None without OK answers.

    Percentiles up to 1 - 1/n of n answers (beyond it a percentile is the maximum itself)."""
    ok = records.ok
    if not np.any(ok):
        return None
    latencies_us = records.latency_from_intended_us[ok]
    count = int(latencies_us.size)
    decades = max(1.0, math.log10(count))
    exponents = np.linspace(0.0, decades, round(decades * DISTRIBUTION_STEPS_PER_DECADE) + 1)
    percentiles = 100.0 * (1.0 - 10.0**-exponents)
    values_ms = np.percentile(latencies_us, percentiles, method="higher") / 1000.0
    return LatencyDistribution(
        count,
        tuple(float(p) for p in percentiles),
        tuple(float(v) for v in values_ms),
        float(latencies_us.max()) / 1000.0,
    )


@dataclass(frozen=True)
class BatchSizes:
    """How many batches of each size answered the OK requests (from the size each answer carries)."""

    batches_by_size: dict[int, float]  # a batch of b answered b requests: requests / b
    requests: int

    @property
    def batches(self) -> float:
        return sum(self.batches_by_size.values())

    @property
    def mean_batch_size(self) -> float:
        """Mean size per batch (not per request, which weighs big batches more)."""
        return self.requests / self.batches if self.batches else math.nan


def batch_sizes(records: RecordColumns) -> BatchSizes | None:
    """Batches by size, over the OK answers that carry a batch size; None when none does.

    Exact when every request of every batch came from this run (one load generator per
    service); a batch shared with other clients counts as the fraction this run saw of it."""
    sizes = records.batch_size[records.ok & (records.batch_size > 0)]
    if sizes.size == 0:
        return None
    values, counts = np.unique(sizes, return_counts=True)
    return BatchSizes(
        {int(size): float(count) / float(size) for size, count in zip(values, counts, strict=True)},
        int(sizes.size),
    )


@dataclass(frozen=True)
class Timings:
    """p50 and p90 (ms) of every duration column of records.csv over the OK answers."""

    requests: int
    p50_ms: dict[str, float]
    p90_ms: dict[str, float]
    # A router's bytes to and from its catalog shards per request (0 unsharded).
    shard_wire_bytes_p50: float = 0.0


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
        float(np.percentile(records.shard_wire_bytes[ok], 50)),
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
