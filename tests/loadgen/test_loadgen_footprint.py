"""The load generator's footprint and the number of load-generator processes a rate needs."""

from __future__ import annotations

import pytest
from etude.services.loadgen.footprint import CORE_BUDGET, instances_needed, loadgen_footprint

from etude import defaults
from etude.v1 import loadgen_pb2


def test_a_run_using_more_than_its_share_of_a_core_is_flagged() -> None:
    lateness = loadgen_pb2.LatencyPercentiles(count=20_000, p50_ms=0.2, p99_ms=0.9)
    footprint = loadgen_footprint(cpu_s=6.0, requests_sent=20_000, duration_s=10.0, send_lateness=lateness)
    assert footprint.cpu_us_per_request == pytest.approx(300.0)
    assert footprint.cores_used == pytest.approx(0.6)
    assert footprint.core_budget == CORE_BUDGET == defaults.LOADGEN_CORE_BUDGET
    assert footprint.over_core_budget
    assert footprint.send_lateness == lateness
    assert not loadgen_footprint(4.0, 20_000, 10.0, lateness).over_core_budget


def test_a_run_that_sent_nothing_has_no_cost_per_request() -> None:
    footprint = loadgen_footprint(0.01, 0, 1.0, loadgen_pb2.LatencyPercentiles())
    assert footprint.cpu_us_per_request == 0.0


@pytest.mark.parametrize(
    ("rate_per_s", "cpu_us_per_request", "instances"),
    [
        (1_000, 200.0, 1),  # 0.2 cores
        (2_500, 200.0, 1),  # exactly 0.5 cores
        (2_000, 300.0, 2),  # 0.6 cores
        (8_000, 250.0, 4),  # 2 cores
        (8_000, 0.0, 1),  # no measurement yet
    ],
)
def test_instances_keep_each_load_generator_within_its_core_budget(
    rate_per_s: float, cpu_us_per_request: float, instances: int
) -> None:
    assert instances_needed(rate_per_s, cpu_us_per_request, core_budget=0.5) == instances
    if cpu_us_per_request > 0:
        assert rate_per_s / instances * cpu_us_per_request / 1e6 <= 0.5 + 1e-9
