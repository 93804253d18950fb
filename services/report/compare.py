"""`etude compare`: two experiments side by side, trial by trial (matched by trial id), with B/A ratios.

Reads each experiment's stored experiment.json only (the runner's summaries and verdicts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etude.provenance import differences
from etude.v1 import controller_pb2, experiment_pb2

# (label, attribute path in the trial's LoadSummary, number format).
_METRICS: tuple[tuple[str, str, str], ...] = (
    ("ok/s run", "achieved_rate_per_s", ",.1f"),
    ("ok/s hold", "achieved_hold_rate_per_s", ",.1f"),
    ("p50 ms", "latency_from_intended.p50_ms", ".2f"),
    ("p90 ms", "latency_from_intended.p90_ms", ".2f"),
    ("p99 ms", "latency_from_intended.p99_ms", ".2f"),
    ("errors", "requests_failed", ",.0f"),
    ("not sent", "requests_not_sent", ",.0f"),
)
_FORMATS = {label: number_format for label, _, number_format in _METRICS}


@dataclass(frozen=True)
class MetricPair:
    metric: str
    a: float | None  # None: the trial has no summary in that experiment
    b: float | None

    @property
    def ratio(self) -> float | None:
        """B / A; None when either is missing or A is 0 (inf when only A is 0 would mislead)."""
        if self.a is None or self.b is None or self.a == 0:
            return None
        return self.b / self.a


@dataclass(frozen=True)
class TrialComparison:
    trial_id: str
    metrics: list[MetricPair]
    slo_met_a: bool | None
    slo_met_b: bool | None


@dataclass(frozen=True)
class Comparison:
    experiment_a: str
    experiment_b: str
    trials: list[TrialComparison]
    only_in_a: list[str]
    only_in_b: list[str]
    # What differs in the environments that produced them ("torch_version: 2.13.0 vs 2.11.0").
    environment_differences: list[str] = field(default_factory=list)


def _read(result: experiment_pb2.TrialResult, path: str) -> float | None:
    if not result.HasField("summary"):
        return None
    value: object = result.summary
    for name in path.split("."):
        value = getattr(value, name)
    return float(value)  # type: ignore[arg-type]


def compare_experiments(a: controller_pb2.Experiment, b: controller_pb2.Experiment) -> Comparison:
    """Pairs the trials of `a` and `b` by trial id (in a's order) and lists the unmatched ones."""
    trials_b = {result.trial.trial_id: result for result in b.trials}
    ids_a = {result.trial.trial_id for result in a.trials}
    compared = []
    for result_a in a.trials:
        result_b = trials_b.get(result_a.trial.trial_id)
        if result_b is None:
            continue
        compared.append(
            TrialComparison(
                result_a.trial.trial_id,
                [
                    MetricPair(label, _read(result_a, path), _read(result_b, path))
                    for label, path, _ in _METRICS
                ],
                result_a.slo_met if result_a.HasField("summary") else None,
                result_b.slo_met if result_b.HasField("summary") else None,
            )
        )
    return Comparison(
        a.experiment_id,
        b.experiment_id,
        compared,
        [result.trial.trial_id for result in a.trials if result.trial.trial_id not in trials_b],
        [result.trial.trial_id for result in b.trials if result.trial.trial_id not in ids_a],
        (
            differences(a.environment, b.environment)
            if a.environment.etude_version and b.environment.etude_version
            else []
        )
        + _inference_differences(a, b),
    )


def _inference_differences(a: controller_pb2.Experiment, b: controller_pb2.Experiment) -> list[str]:
    """How the inference services of trials paired by id differ in their own environments, each
    difference once (on Kubernetes they ran on other machines than the controllers)."""
    trials_b = {result.trial.trial_id: result for result in b.trials}
    lines: dict[str, None] = {}
    for result_a in a.trials:
        result_b = trials_b.get(result_a.trial.trial_id)
        if result_b is None or not (
            result_a.HasField("inference_environment") and result_b.HasField("inference_environment")
        ):
            continue
        for difference in differences(result_a.inference_environment, result_b.inference_environment):
            lines[f"inference service: {difference}"] = None
    return list(lines)


def _number(value: float | None, number_format: str) -> str:
    return "-" if value is None else format(value, number_format)


def _slo(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def comparison_markdown(comparison: Comparison) -> str:
    """A Markdown table, one row per trial and metric: A, B and B / A."""
    header = ("trial", "metric", "A", "B", "B/A")
    rows: list[tuple[str, ...]] = []
    for trial in comparison.trials:
        for pair in trial.metrics:
            ratio = pair.ratio
            number_format = _FORMATS[pair.metric]
            rows.append(
                (
                    trial.trial_id,
                    pair.metric,
                    _number(pair.a, number_format),
                    _number(pair.b, number_format),
                    "-" if ratio is None else f"{ratio:.2f}x",
                )
            )
        rows.append((trial.trial_id, "SLO", _slo(trial.slo_met_a), _slo(trial.slo_met_b), "-"))
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    warning = (
        ["WARNING: A and B ran in different environments; differences may come from these:"]
        + [f"  {difference}" for difference in comparison.environment_differences]
        + [""]
        if comparison.environment_differences
        else []
    )
    lines = [
        *warning,
        f"A: {comparison.experiment_a}",
        f"B: {comparison.experiment_b}",
        "Latency from the intended send time (OK answers); ok/s = successful answers per second.",
        "",
        line(header),
        "| " + " | ".join("-" * width for width in widths) + " |",
        *(line(row) for row in rows),
    ]
    if not comparison.trials:
        lines.append("(no trial id appears in both experiments)")
    if comparison.only_in_a:
        lines.append("Only in A: " + ", ".join(comparison.only_in_a))
    if comparison.only_in_b:
        lines.append("Only in B: " + ", ".join(comparison.only_in_b))
    return "\n".join(lines) + "\n"
