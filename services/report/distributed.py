"""The report's "Distributed inference" section: each trial served by a router over catalog
shards next to the unsharded trial of the same scenario (model, catalog, runtime, precision),
and the memory every server of them measured of itself, with the largest catalog it implies."""

from __future__ import annotations

from collections.abc import Sequence

from etude.v1 import experiment_pb2

from ..inference.sizing import FP32_BYTES
from .capacity import SERVER_MEMORY_LABEL, bytes_per_row, largest_catalog, serving_bytes
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


def _items(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _largest(report: TrialReport | None) -> int | None:
    return None if report is None else largest_catalog(report.result.trial, report.result.server_memory)


def _memory_rows(reports: Sequence[TrialReport]) -> list[tuple[str, ...]]:
    """One row per server of each trial that measured its memory."""
    rows: list[tuple[str, ...]] = []
    for report in reports:
        for memory in report.result.server_memory:
            per_row = bytes_per_row(memory)
            rows.append(
                (
                    report.trial_id,
                    memory.server,
                    _mib(memory.peak_resident_bytes),
                    _mib(memory.resident_bytes),
                    _mib(memory.startup_resident_bytes),
                    _mib(memory.built_peak_resident_bytes - memory.startup_resident_bytes),
                    _mib(serving_bytes(memory)),
                    _mib(memory.table_bytes),
                    f"{memory.rows_held:,}",
                    "-" if per_row is None else f"{per_row:,.0f}",
                )
            )
    return rows


def distributed_blocks(trials: Sequence[TrialReport]) -> list[Block]:
    """The section, or nothing when no trial had catalog shards."""
    sharded = [t for t in trials if t.result.trial.hardware.catalog_shards >= 2]
    if not sharded:
        return []
    unsharded = {_scenario(t.result.trial): t for t in trials if t.result.trial.hardware.catalog_shards < 2}
    header = (
        "trial", "shards", "p50 / p90 / p99 ms", "unsharded p50 / p90 / p99 ms", "p90 ratio",
        "fan-out p50 / p90 ms", "shard compute p50 / p90 ms", "bytes/request p50",
        "rows per shard", "table MiB per shard (computed)", "unsharded table MiB (computed)",
        f"largest catalog at {SERVER_MEMORY_LABEL} per server (measured)",
        f"unsharded: largest catalog at {SERVER_MEMORY_LABEL} (measured)",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    # The servers whose memory the second table shows: the sharded trials', then their counterparts'.
    measured = list(sharded)
    for report in sharded:
        trial = report.result.trial
        hardware = trial.hardware
        mine = _latency(report)
        counterpart = unsharded.get(_scenario(trial))
        theirs = _latency(counterpart)
        if counterpart is not None and all(counterpart is not known for known in measured):
            measured.append(counterpart)
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
                _items(_largest(report)),
                _items(_largest(counterpart)),
            )
        )
    memory_rows = _memory_rows(measured)
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
            "(computed) is its share of the fp32 item rows, ceil(C / N) x d x 4 bytes, without the "
            "hot items a popular layout replicates. The largest catalog (measured) extrapolates "
            f"the memory the servers measured of themselves to {SERVER_MEMORY_LABEL} per server "
            "(the memory limit of a CPU pod in deploy/kustomize): the fullest shard's rows that "
            "fit, times N, less the replicated share; '-' where a server was not measured or the "
            "rows sit on a GPU. On the local target every shard shares this machine's cores with "
            "the router and the load generator."
        ),
        Table(header, tuple(rows)),
        *_memory_blocks(memory_rows),
    ]


def _memory_blocks(rows: list[tuple[str, ...]]) -> list[Block]:
    if not rows:
        return []
    header = (
        "trial", "server", "peak MiB", "resident MiB", "MiB before tables", "MiB building tables",
        "MiB serving", "tables MiB (allocated)", "rows held", "bytes per row (measured)",
    )  # fmt: skip
    return [
        Heading(3, "Memory per server (measured)"),
        Paragraph(
            "Each server's memory as it measured itself (the kernel's VmRSS and VmHWM of its "
            "process; host memory only): the peak since it started and the resident bytes once the "
            "load had run; before its tables were built (the runtime and libraries, which do not "
            "grow with the catalog); what building the tables took at its peak (the rows and their "
            "transient copies; a router builds its encoder only); and what serving added above "
            "that peak (warm-up, batches, score buffers: bounded by the batch size and the score "
            "chunk, not the catalog). Bytes per row = building the tables / rows held. The largest "
            "catalog above is the rows that fit beside the memory before tables and the serving "
            "memory, at that cost per row: serving is counted on top of the build's peak although "
            "its transient copies are gone by then, so the estimate is on the safe side."
        ),
        Table(header, tuple(rows)),
    ]
