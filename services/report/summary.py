"""The summary table printed after an experiment and stored as summary.md."""

from __future__ import annotations

from etude.v1 import controller_pb2, experiment_pb2

_STATE_NAMES = {
    experiment_pb2.TRIAL_STATE_PENDING: "pending",
    experiment_pb2.TRIAL_STATE_DEPLOYING: "deploying",
    experiment_pb2.TRIAL_STATE_RUNNING: "running",
    experiment_pb2.TRIAL_STATE_SUCCEEDED: "done",
    experiment_pb2.TRIAL_STATE_FAILED: "FAILED",
    experiment_pb2.TRIAL_STATE_CANCELLED: "cancelled",
    experiment_pb2.TRIAL_STATE_INTERRUPTED: "interrupted",
}

_HEADER = (
    "trial", "state", "offered/s", "ok/s hold", "p50 ms", "p90 ms", "p99 ms", "max ms",
    "errors", "not sent", "queue p50", "model p50", "net p50", "batch", "SLO",
)  # fmt: skip


def _row(result: experiment_pb2.TrialResult, target_rate: float) -> list[str]:
    state = _STATE_NAMES.get(result.state, "?")
    if not result.HasField("summary"):
        return [
            result.trial.trial_id,
            state,
            f"{target_rate:g}",
            *["-"] * 11,
            result.error[:60] or "-",
        ]
    summary = result.summary
    latency = summary.latency_from_intended
    return [
        result.trial.trial_id,
        state,
        f"{target_rate:g}",
        f"{summary.achieved_hold_rate_per_s:.1f}",
        f"{latency.p50_ms:.2f}",
        f"{latency.p90_ms:.2f}",
        f"{latency.p99_ms:.2f}",
        f"{latency.max_ms:.1f}",
        str(summary.requests_failed),
        str(summary.requests_not_sent),
        f"{summary.server_queue.p50_ms:.2f}",
        f"{summary.server_inference.p50_ms:.2f}",
        f"{summary.network_and_overhead.p50_ms:.2f}",
        f"{summary.mean_batch_size:.1f}",
        "met" if result.slo_met else "MISSED",
    ]


def _shown_rate(result: experiment_pb2.TrialResult, target_rate_per_s: float) -> float:
    """The rate the row's figures were measured at: a searched trial shows its best passing
    probe (the last probe when none passed), as the runner keeps that probe's summary."""
    if not result.probes:
        return target_rate_per_s
    return result.max_sustained_rate_per_s or result.probes[-1].rate_per_s


def summary_table(experiment: controller_pb2.Experiment) -> str:
    """A Markdown table, one row per trial: latency from the intended send time, split, verdict."""
    spec = experiment.spec
    rows = [_row(result, _shown_rate(result, spec.load.target_rate_per_s)) for result in experiment.trials]
    widths = [max(len(str(cell)) for cell in column) for column in zip(_HEADER, *rows, strict=True)]

    def line(cells: tuple[str, ...] | list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    slo = spec.slo
    lines = [
        f"Experiment {experiment.experiment_id}: "
        f"{controller_pb2.ExperimentState.Name(experiment.state).removeprefix('EXPERIMENT_STATE_').lower()}",
        f"SLO: p{slo.percentile:g} <= {slo.latency_ms:g} ms at {slo.rate_per_s:g} req/s "
        "(latency from the intended send time; ok/s hold = successful answers per second"
        " at the target rate)",
        "",
        line(_HEADER),
        "| " + " | ".join("-" * width for width in widths) + " |",
        *(line(row) for row in rows),
    ]
    for result in experiment.trials:
        if result.slo_verdict:
            lines.append(f"- {result.trial.trial_id}: {result.slo_verdict}")
        if result.error:
            lines.append(f"- {result.trial.trial_id}: error: {result.error}")
    if experiment.error:
        lines.append(f"- experiment: {experiment.error}")
    lines.append(f"Results: {experiment.results_uri}")
    return "\n".join(lines)
