"""`etude search`: the highest rate a deployment sustains within its SLO.

A bounded search over constant-rate load tests (probes) against one deployed inference
service, in the spirit of Triton's perf_analyzer latency threshold and MLPerf's server
scenario. Stability rule: a probe passes when, over its hold phase, the SLO percentile of
latency from the intended send time (failed requests counting as infinitely slow) is within
the bound and successful answers reach the probe's rate within 2% (backpressure that kept
requests from being sent therefore fails it too). The search doubles the rate from the start
rate while probes pass (halves it while they fail), then bisects between the highest passing
and the lowest failing rate until they are within `precision` of each other, or the probe
budget is spent. Latency is not monotonic in the rate on a noisy machine; the search reports
every probe so that a reader can see where it was not.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from etude import defaults
from etude.v1 import experiment_pb2

Probe = Callable[[float], Awaitable[experiment_pb2.SearchProbe]]

# Below this rate a deployment is not worth searching further.
MIN_RATE_PER_S = 1.0


@dataclass(frozen=True)
class SearchSettings:
    """The search's knobs (ExperimentSpec.search, which says their bounds)."""

    # First rate probed; 0 means the SLO's required rate.
    start_rate_per_s: float = 0.0
    # Highest rate probed; 0 means 64 x the start rate.
    max_rate_per_s: float = 0.0
    # Stop once (lowest failing - highest passing) / lowest failing <= precision.
    precision: float = defaults.SEARCH_PRECISION
    max_probes: int = defaults.SEARCH_MAX_PROBES

    @classmethod
    def from_spec(cls, search: experiment_pb2.RateSearch) -> SearchSettings:
        """The settings of a spec's `search` (zeros mean the defaults, as the proto says)."""
        return cls(
            search.start_rate_per_s,
            search.max_rate_per_s,
            search.precision or defaults.SEARCH_PRECISION,
            search.max_probes or defaults.SEARCH_MAX_PROBES,
        )

    def __post_init__(self) -> None:
        if self.start_rate_per_s < 0 or self.max_rate_per_s < 0:
            raise ValueError("search rates must be >= 0")
        if not 0 < self.precision < 1:
            raise ValueError(f"precision must be in (0, 1), got {self.precision}")
        if self.max_probes < 1:
            raise ValueError(f"max_probes must be >= 1, got {self.max_probes}")


def _round_rate(rate_per_s: float) -> float:
    # Three significant digits: probes at 1234.5678/s and 1234/s measure the same thing.
    digits = max(0, 2 - math.floor(math.log10(rate_per_s)))
    return round(rate_per_s, digits)


async def search_max_rate(
    settings: SearchSettings, required_rate_per_s: float, probe: Probe
) -> tuple[float, list[experiment_pb2.SearchProbe]]:
    """Runs probes as the rule above says; returns (highest passing rate or 0, every probe)."""
    start = settings.start_rate_per_s or required_rate_per_s
    ceiling = settings.max_rate_per_s or defaults.SEARCH_CEILING_FACTOR * start
    passing, failing = 0.0, math.inf
    probes: list[experiment_pb2.SearchProbe] = []
    rate = _round_rate(min(start, ceiling))
    while len(probes) < settings.max_probes:
        result = await probe(rate)
        probes.append(result)
        if result.slo_met:
            passing = max(passing, rate)
        else:
            failing = min(failing, rate)
        if math.isinf(failing):
            if passing >= ceiling:
                break
            next_rate = min(rate * 2, ceiling)
        elif passing == 0:
            next_rate = rate / 2
            if next_rate < MIN_RATE_PER_S:
                break
        else:
            if (failing - passing) / failing <= settings.precision:
                break
            next_rate = (passing + failing) / 2
        next_rate = _round_rate(next_rate)
        if next_rate in (passing, failing):  # rounding left nothing between them
            break
        rate = next_rate
    return passing, probes
