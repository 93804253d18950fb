"""What the load generator itself costs: its LoadGenFootprint, and how many load-generator
processes a target rate needs so that none of them uses more than its share of a core."""

from __future__ import annotations

import math

from etude import defaults
from etude.v1 import loadgen_pb2

# Share of one core above which a run counts as perturbed by its own load generator.
CORE_BUDGET = defaults.LOADGEN_CORE_BUDGET


def loadgen_footprint(
    cpu_s: float,
    requests_sent: int,
    duration_s: float,
    send_lateness: loadgen_pb2.LatencyPercentiles,
    core_budget: float = CORE_BUDGET,
) -> loadgen_pb2.LoadGenFootprint:
    """The footprint of one run: `cpu_s` of process CPU time over `duration_s` (> 0)."""
    cores_used = cpu_s / duration_s
    return loadgen_pb2.LoadGenFootprint(
        cpu_s=cpu_s,
        cpu_us_per_request=1e6 * cpu_s / requests_sent if requests_sent else 0.0,
        cores_used=cores_used,
        core_budget=core_budget,
        over_core_budget=cores_used > core_budget,
        send_lateness=send_lateness,
    )


def instances_needed(
    target_rate_per_s: float, cpu_us_per_request: float, core_budget: float = CORE_BUDGET
) -> int:
    """The fewest load-generator processes that share `target_rate_per_s` evenly with each one
    using at most `core_budget` of a core, at `cpu_us_per_request` (a measured footprint)."""
    if target_rate_per_s <= 0 or cpu_us_per_request <= 0:
        return 1
    cores = target_rate_per_s * cpu_us_per_request / 1e6
    # The small epsilon keeps an exact fit (0.5 cores at a 0.5 budget) at one instance.
    return max(1, math.ceil(cores / core_budget - 1e-9))
