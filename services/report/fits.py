"""The workload's classic power-law exponents fitted back from what a run replayed, next to
what the spec asked for (for a replayed log: the log's own exponents, fitted on the whole log)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from etude import defaults
from etude.v1 import experiment_pb2

from ..workload.fit import ClickLogStatistics, fit_counts
from ..workload.generator import (
    MAX_CLICK_COUNT,
    InvalidWorkloadSpec,
    ItemPopularity,
    ScipyPowerLaw,
    SyntheticWorkload,
    fit_power_law_exponent,
)
from ..workload.replay import ReplayIndex
from ..workload.trial import workload_spec

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


def workload_of(trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec) -> SyntheticWorkload | None:
    """The generator a trial's sessions came from (None: not a synthetic workload)."""
    if spec.workload.source not in ("", defaults.WORKLOAD_SOURCE):
        return None
    try:
        return SyntheticWorkload.from_proto(workload_spec(trial, spec))
    except InvalidWorkloadSpec:
        return None


@dataclass(frozen=True)
class ReplayedLog:
    """A replayed click log's statistics, fitted on the whole log (both parameterisations)."""

    path: str
    statistics: ClickLogStatistics

    def describe(self) -> str:
        stats = self.statistics
        lengths, clicks = stats.length_fit, stats.clicks_fit
        return (
            f"{stats.num_clicks:,} clicks, {stats.num_sessions:,} sessions, {stats.num_items:,} items "
            f"(ids 1..{stats.num_items:,} by first appearance); fitted on the whole log: alpha_length "
            f"{stats.alpha_length:.4f}, alpha_clicks {stats.alpha_clicks:.4f}; scipy.stats.powerlaw "
            f"session lengths (a={lengths.a:.5g}, loc={lengths.loc:.5g}, scale={lengths.scale:.6g}), "
            f"click counts (a={clicks.a:.5g}, loc={clicks.loc:.5g}, scale={clicks.scale:.6g})"
        )


def fit_replayed_log(index: ReplayIndex, path: str) -> ReplayedLog:
    """Both parameterisations of the log an index holds (`etude workload fit` of the log)."""
    return ReplayedLog(path, fit_counts(index.session_lengths, index.item_click_counts))


def fit_replay(
    index: ReplayIndex, log: ReplayedLog, replayed: np.ndarray, source: str
) -> list[FittedExponent]:
    """The exponents of what a run replayed next to the whole log's. `replayed`: [n, 2] of
    (session position from 1, click index), as replayed_clicks reads them from records.csv; the
    items of those clicks are looked up in the index (records.csv holds no item ids)."""
    stats = log.statistics
    requested = f"the log {log.path}"
    positions, clicks = replayed[:, 0], replayed[:, 1]
    known = (
        replayed.size > 0
        and positions.min() >= 1
        and positions.max() <= index.num_sessions
        and clicks.min() >= 0
        and bool(np.all(clicks < index.session_lengths[np.clip(positions, 1, index.num_sessions) - 1]))
    )
    if not known:  # nothing replayed, or records of another log
        return [
            FittedExponent("session length", requested, stats.alpha_length, None, 0, source),
            FittedExponent("item popularity", requested, stats.alpha_clicks, None, 0, source),
        ]
    sessions, inverse = np.unique(positions, return_inverse=True)
    per_session = np.zeros(sessions.size, dtype=np.int64)
    np.maximum.at(per_session, inverse, clicks + 1)
    items = np.asarray(index.item_ids[index.session_offsets[positions - 1] + clicks], dtype=np.int64)
    per_item = np.bincount(items)
    per_item = per_item[per_item > 0]
    item_source = f"the items of those clicks, looked up in the log by (session, click) ({source})"
    return [
        FittedExponent(
            "session length",
            requested,
            stats.alpha_length,
            fit_power_law_exponent(per_session),
            int(per_session.size),
            source,
        ),
        FittedExponent(
            "item popularity",
            requested,
            stats.alpha_clicks,
            fit_power_law_exponent(per_item),
            int(per_item.size),
            item_source,
        ),
    ]
