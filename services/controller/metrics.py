"""The controller's Prometheus metrics: its experiments by state, counted at each scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from etude.v1 import controller_pb2

EXPERIMENTS = "etude_controller_experiments"


def state_name(state: int) -> str:
    """`EXPERIMENT_STATE_SUCCEEDED` -> `succeeded`, the metric's label value."""
    return controller_pb2.ExperimentState.Name(state).removeprefix("EXPERIMENT_STATE_").lower()


class ExperimentsCollector(Collector):
    """`etude_controller_experiments{state=...}` from `counts()` (state -> count), every state
    listed (zero included) so that a dashboard's series do not come and go."""

    def __init__(self, counts: Callable[[], Mapping[int, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts()
        family = GaugeMetricFamily(
            EXPERIMENTS, "Experiments the controller knows, by state.", labels=["state"]
        )
        for state in controller_pb2.ExperimentState.values():
            if state != controller_pb2.EXPERIMENT_STATE_UNSPECIFIED:
                family.add_metric([state_name(state)], counts.get(state, 0))
        yield family


_registered: list[ExperimentsCollector] = []


def export_experiment_states(counts: Callable[[], Mapping[int, int]]) -> None:
    """Exports `counts()` on the default registry, in place of any manager exported before."""
    while _registered:
        REGISTRY.unregister(_registered.pop())
    collector = ExperimentsCollector(counts)
    REGISTRY.register(collector)
    _registered.append(collector)
