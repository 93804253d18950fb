"""The workload's classic power-law exponents fitted back from what a run replayed, next to
what the spec asked for."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from etude import defaults
from etude.v1 import experiment_pb2

from ..workload.generator import (
    MAX_CLICK_COUNT,
    InvalidWorkloadSpec,
    ItemPopularity,
    ScipyPowerLaw,
    SyntheticWorkload,
    fit_power_law_exponent,
)
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
