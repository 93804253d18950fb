"""The SLO search finds the highest passing rate with a bounded number of probes."""

from __future__ import annotations

import pytest
from etude.services.controller.search import SearchSettings, search_max_rate

from etude.v1 import experiment_pb2


def capacity_probe(capacity_per_s: float, probed: list[float]):
    async def probe(rate_per_s: float) -> experiment_pb2.SearchProbe:
        probed.append(rate_per_s)
        return experiment_pb2.SearchProbe(rate_per_s=rate_per_s, slo_met=rate_per_s <= capacity_per_s)

    return probe


@pytest.mark.parametrize("capacity", [130.0, 1000.0, 4321.0, 37.0])
async def test_search_converges_within_precision_of_the_capacity(capacity: float) -> None:
    probed: list[float] = []
    settings = SearchSettings(precision=0.05, max_probes=20)
    best, probes = await search_max_rate(settings, 500.0, capacity_probe(capacity, probed))
    assert best <= capacity
    assert best >= capacity * 0.95
    assert [p.rate_per_s for p in probes] == probed
    assert probed[0] == 500.0


async def test_search_stops_at_the_ceiling_when_everything_passes() -> None:
    probed: list[float] = []
    best, _ = await search_max_rate(SearchSettings(max_rate_per_s=1000), 100.0, capacity_probe(1e9, probed))
    assert best == 1000.0
    assert probed == [100.0, 200.0, 400.0, 800.0, 1000.0]


async def test_search_reports_zero_when_even_the_smallest_rate_fails() -> None:
    probed: list[float] = []
    best, probes = await search_max_rate(SearchSettings(max_probes=20), 8.0, capacity_probe(0.0, probed))
    assert best == 0.0
    assert probed == [8.0, 4.0, 2.0, 1.0]
    assert not any(p.slo_met for p in probes)


async def test_search_never_exceeds_its_probe_budget() -> None:
    probed: list[float] = []
    await search_max_rate(SearchSettings(max_probes=3, precision=0.001), 100.0, capacity_probe(777.0, probed))
    assert len(probed) == 3


@pytest.mark.parametrize("field", [{"precision": 0.0}, {"max_probes": 0}, {"start_rate_per_s": -1.0}])
def test_bad_settings_are_refused(field: dict) -> None:
    with pytest.raises(ValueError):
        SearchSettings(**field)


def test_the_summary_of_a_searched_trial_shows_the_rate_its_figures_were_measured_at() -> None:
    from etude.services.report.summary import summary_table

    from etude.v1 import controller_pb2

    experiment = controller_pb2.Experiment(experiment_id="x")
    experiment.spec.load.target_rate_per_s = 250
    searched = experiment.trials.add(max_sustained_rate_per_s=1125)
    searched.trial.trial_id = "searched"
    searched.probes.add(rate_per_s=1125, slo_met=True)
    searched.summary.requests_sent = 1
    failed = experiment.trials.add()
    failed.trial.trial_id = "never-passed"
    failed.probes.add(rate_per_s=8, slo_met=False)
    failed.summary.requests_sent = 1
    rows = {
        line.split("|")[1].strip(): line.split("|")[3].strip()
        for line in summary_table(experiment).splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert rows["searched"] == "1125" and rows["never-passed"] == "8"
