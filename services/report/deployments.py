"""The deployment table (the ETUDE paper's Table I): per scenario, each hardware option's replica
count meeting the SLO and its monthly cost, the cheapest marked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from etude.v1 import experiment_pb2


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
