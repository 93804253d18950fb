"""The report's "Distributed inference" section: each trial served by a router over catalog
shards next to the unsharded trial of the same scenario (model, catalog, runtime, precision)."""

from __future__ import annotations

from collections.abc import Sequence

from etude.v1 import experiment_pb2

from ..inference.sizing import FP32_BYTES
from .document import Block, Heading, Paragraph, Table
from .trials import TrialReport


def _scenario(trial: experiment_pb2.Trial) -> tuple[str, int, str, str, int]:
    return (trial.model.name, trial.catalog_size, trial.runtime, trial.precision, trial.repetition)


def _latency(report: TrialReport | None) -> tuple[float, float, float] | None:
    if report is None or not report.result.HasField("summary"):
        return None
    latency = report.result.summary.latency_from_intended
    return latency.p50_ms, latency.p90_ms, latency.p99_ms


def _ms3(values: tuple[float, float, float] | None) -> str:
    return "-" if values is None else " / ".join(f"{value:.1f}" for value in values)


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def distributed_blocks(trials: Sequence[TrialReport]) -> list[Block]:
    """The section, or nothing when no trial had catalog shards."""
    sharded = [t for t in trials if t.result.trial.hardware.catalog_shards >= 2]
    if not sharded:
        return []
    unsharded = {_scenario(t.result.trial): t for t in trials if t.result.trial.hardware.catalog_shards < 2}
    header = (
        "trial", "shards", "p50 / p90 / p99 ms", "unsharded p50 / p90 / p99 ms", "p90 ratio",
        "fan-out p50 / p90 ms", "shard compute p50 / p90 ms", "bytes/request p50",
        "rows per shard", "table MiB per shard", "unsharded table MiB",
    )  # fmt: skip
    rows = []
    for report in sharded:
        trial = report.result.trial
        hardware = trial.hardware
        mine = _latency(report)
        theirs = _latency(unsharded.get(_scenario(trial)))
        ratio = f"{mine[1] / theirs[1]:.2f}" if mine and theirs and theirs[1] > 0 else "-"
        timings = report.timings
        fanout = compute = wire = "-"
        if timings is not None:
            fanout = f"{timings.p50_ms['shard_fanout_us']:.2f} / {timings.p90_ms['shard_fanout_us']:.2f}"
            compute = f"{timings.p50_ms['shard_compute_us']:.2f} / {timings.p90_ms['shard_compute_us']:.2f}"
            wire = f"{timings.shard_wire_bytes_p50:,.0f}"
        rows_per_shard = -(-trial.catalog_size // hardware.catalog_shards)
        row_bytes = trial.embedding_dim * FP32_BYTES
        rows.append(
            (
                report.trial_id,
                f"{hardware.catalog_shards} x {hardware.shard_strategy or 'range'}",
                _ms3(mine),
                _ms3(theirs),
                ratio,
                fanout,
                compute,
                wire,
                f"{rows_per_shard:,}",
                _mib(rows_per_shard * row_bytes),
                _mib((trial.catalog_size + 1) * row_bytes),
            )
        )
    return [
        Heading(2, "Distributed inference"),
        Paragraph(
            "Trials whose catalog was split across catalog shards (a router runs the encoder, looks "
            "the session's items up from the shards that hold them and merges the shards' exact "
            "top-k), next to the unsharded trial of the same model, catalog size, runtime and "
            "precision when the experiment has one. Latencies are from the intended send time. "
            "fan-out: the router's wall time waiting on the shards per batch (lookups, then "
            "scoring); shard compute: the slowest shard's scoring time per batch; bytes/request: "
            "messages to and from the shards per batch, divided by its size. The table per shard "
            "is its share of the fp32 item rows (ceil(C / N) x d x 4 bytes, plus the hot items a "
            "popular layout replicates), which bounds the largest catalog a configuration holds: "
            "N times what one server's memory allows. On the local target every shard shares this "
            "machine's cores with the router and the load generator."
        ),
        Table(header, tuple(rows)),
    ]
