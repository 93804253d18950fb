"""Merges the files of several load generators that drove one run together into the files one
load generator would have written (records.csv, series.csv, run.json, summary.json).

Each instance times its records with its own time.perf_counter_ns(); its run.json maps that
clock to the wall clock, through which every instance's times are moved onto instance 0's
clock. Instance 0's rows keep their values (and so still join its traces); session ids of the
other instances get a "#i" suffix, since every instance numbers its sessions from 0.

It reads and writes every file through the results layer, but lives with the runner that drives
the instances: it rebuilds percentiles with the load generator's own HDR histogram (loadgen/
stats.py), which the results layer, a floor below the load generator, cannot import.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from etude.v1 import loadgen_pb2

from ..loadgen.stats import LatencyHistogram
from ..results.errors import ResultsError
from ..results.layout import RECORDS_FILE, RUN_FILE, SERIES_FILE, instance_folder
from ..results.records import OK, Record, RecordColumns, read_records, write_records
from ..results.run import read_run_info, write_run_info, write_summary
from ..results.series import SeriesRow, read_series, write_series

_TIME_FIELDS = ("intended_send_ns", "actual_send_ns", "completion_ns")
# series.csv columns that add up across instances (the rest: tick, and recomputed percentiles).
_SUMMED_SERIES_FIELDS = ("sent", "completed", "ok", "errors", "not_sent", "in_flight")


class MergeError(ResultsError):
    """An instance's files are missing or do not fit together; the message names the file."""


def instance_run_id(run_id: str, instance: int) -> str:
    """The run id of one instance of a run: "<run>#i"."""
    return f"{run_id}#{instance}"


def instance_dir(folder: Path, instance: int) -> Path:
    """Where instance `instance` of the run kept in `folder` writes its files."""
    return folder / instance_folder(instance)


@dataclass
class _Tick:
    target_rate_per_s: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    from_intended: LatencyHistogram = field(default_factory=LatencyHistogram)


def merge_runs(
    folders: Sequence[Path], summaries: Sequence[loadgen_pb2.LoadSummary], out_dir: Path, run_id: str
) -> loadgen_pb2.LoadSummary:
    """Writes the merged records.csv, series.csv, run.json and summary.json of the instances whose
    files are in `folders` (instance i in folders[i], its summary in summaries[i]) into `out_dir`,
    and returns the merged summary. Blocking file I/O: call it off the event loop."""
    if not folders or len(folders) != len(summaries):
        raise MergeError(f"{len(folders)} folders and {len(summaries)} summaries: need as many of each, >= 1")
    try:
        run_infos = [read_run_info(folder) for folder in folders]
        reference = run_infos[0]
        ticks: dict[int, _Tick] = {}
        parts: list[RecordColumns] = []
        for instance, (folder, run_info) in enumerate(zip(folders, run_infos, strict=True)):
            series = read_series(folder / SERIES_FILE)
            for row in series:
                tick = ticks.setdefault(row.tick, _Tick())
                tick.target_rate_per_s += row.target_rate_per_s
                tick.counts.update({name: getattr(row, name) for name in _SUMMED_SERIES_FIELDS})
            records = read_records(folder / RECORDS_FILE)
            _add_tick_latencies(ticks, series, records)
            clock_offset_ns = _clock_offset_ns(run_info, reference, folder)
            parts.append(_on_reference_clock(records, clock_offset_ns, instance))
    except MergeError:
        raise
    except ResultsError as error:
        raise MergeError(str(error)) from error
    merged = _concatenate(parts)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / RECORDS_FILE, merged.rows())
    write_series(out_dir / SERIES_FILE, _merged_series(ticks))
    run_info = {
        **reference,
        "run_id": run_id,
        "tick_rates_per_s": [ticks[index].target_rate_per_s for index in sorted(ticks)],
        "instances": [
            {**info, "folder": folder.name} for info, folder in zip(run_infos, folders, strict=True)
        ],
    }
    write_run_info(out_dir, run_info)
    summary = merged_summary(summaries, merged, run_id, str(out_dir))
    write_summary(out_dir, summary)
    return summary


def _add_tick_latencies(ticks: dict[int, _Tick], series: Sequence[SeriesRow], records: RecordColumns) -> None:
    """Adds each OK answer's latency to the tick it completed in. Rows are appended in completion
    order and handed over once per tick: the first `completed` rows of tick 0, then those of tick
    1, ...; the rest completed in the drain and belong to no tick."""
    completion_ticks = np.repeat(
        np.array([row.tick for row in series], dtype=np.int64),
        np.array([row.completed for row in series], dtype=np.int64),
    )
    counted = min(len(completion_ticks), len(records))
    ok = records.ok[:counted]
    for tick, latency_us in zip(
        completion_ticks[:counted][ok].tolist(),
        records.latency_from_intended_us[:counted][ok].tolist(),
        strict=True,
    ):
        ticks[tick].from_intended.record_us(latency_us)


def _on_reference_clock(records: RecordColumns, clock_offset_ns: int, instance: int) -> RecordColumns:
    """The instance's records with their times on instance 0's clock and, past instance 0, its
    session ids suffixed "#i"."""
    moved: dict[str, Any] = {name: records.column(name) + clock_offset_ns for name in _TIME_FIELDS}
    if instance > 0:
        moved["session_id"] = np.char.add(records.session_id.astype(str), f"#{instance}")
    return RecordColumns(**{**{name: records.column(name) for name in Record._fields}, **moved})


def _concatenate(parts: Sequence[RecordColumns]) -> RecordColumns:
    """The instances' records as one run's, sorted by intended send time (instance order on ties)."""
    columns = {name: np.concatenate([part.column(name) for part in parts]) for name in Record._fields}
    instance = np.concatenate([np.full(len(part), index) for index, part in enumerate(parts)])
    order = np.lexsort((instance, columns["intended_send_ns"]))
    return RecordColumns(**{name: values[order] for name, values in columns.items()})


def _merged_series(ticks: dict[int, _Tick]) -> Iterable[SeriesRow]:
    for index in sorted(ticks):
        tick = ticks[index]
        p50_ms, p90_ms, p99_ms = tick.from_intended.percentiles_ms([50, 90, 99])
        counts = tick.counts
        yield SeriesRow(
            index, tick.target_rate_per_s, counts["sent"], counts["completed"], counts["ok"],
            counts["errors"], counts["not_sent"], counts["in_flight"], p50_ms, p90_ms, p99_ms,
        )  # fmt: skip


def merged_summary(
    summaries: Sequence[loadgen_pb2.LoadSummary],
    records: RecordColumns,
    run_id: str,
    records_dir: str,
) -> loadgen_pb2.LoadSummary:
    """One LoadSummary for instances that ran together: counts and rates add up, the latency
    distributions are rebuilt from every instance's records as one generator builds them, the
    mean batch size is over every OK answer that reported one."""
    from_intended, from_actual = LatencyHistogram(), LatencyHistogram()
    queue, inference, network = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    batch_size_sum = batch_size_count = 0
    lateness = LatencyHistogram()
    for row in records.rows():
        lateness.record_us(max(0, (row.actual_send_ns - row.intended_send_ns) // 1000))
        if row.status != OK:
            continue
        from_intended.record_us(row.latency_from_intended_us)
        from_actual.record_us(row.latency_from_actual_us)
        queue.record_us(row.queue_us)
        inference.record_us(row.inference_us)
        network.record_us(max(0, row.latency_from_actual_us - row.server_total_us))
        if row.batch_size > 0:
            batch_size_sum += row.batch_size
            batch_size_count += 1
    errors_by_status: Counter[str] = Counter()
    for summary in summaries:
        errors_by_status.update(dict(summary.errors_by_status))
    return loadgen_pb2.LoadSummary(
        run_id=run_id,
        requests_sent=sum(s.requests_sent for s in summaries),
        requests_ok=sum(s.requests_ok for s in summaries),
        requests_failed=sum(s.requests_failed for s in summaries),
        errors_by_status=dict(errors_by_status),
        requests_not_sent=sum(s.requests_not_sent for s in summaries),
        requests_offered=sum(s.requests_offered for s in summaries),
        duration_s=max(s.duration_s for s in summaries),
        achieved_rate_per_s=sum(s.achieved_rate_per_s for s in summaries),
        achieved_hold_rate_per_s=sum(s.achieved_hold_rate_per_s for s in summaries),
        latency_from_intended=from_intended.summary(),
        latency_from_actual=from_actual.summary(),
        server_queue=queue.summary(),
        server_inference=inference.summary(),
        network_and_overhead=network.summary(),
        mean_batch_size=batch_size_sum / batch_size_count if batch_size_count else 0.0,
        ticks=max(s.ticks for s in summaries),
        records_dir=records_dir,
        transport=summaries[0].transport,
        footprint=_merged_footprint(summaries, lateness),
        candidates_per_request=summaries[0].candidates_per_request,
    )


def _merged_footprint(
    summaries: Sequence[loadgen_pb2.LoadSummary], lateness: LatencyHistogram
) -> loadgen_pb2.LoadGenFootprint:
    """The instances' footprint together: CPU adds up, per request over every request sent; over
    budget when any instance was (each ran on its own share of CPU)."""
    cpu_s = sum(s.footprint.cpu_s for s in summaries)
    sent = sum(s.requests_sent for s in summaries)
    return loadgen_pb2.LoadGenFootprint(
        cpu_s=cpu_s,
        cpu_us_per_request=cpu_s * 1e6 / sent if sent else 0.0,
        cores_used=sum(s.footprint.cores_used for s in summaries),
        core_budget=summaries[0].footprint.core_budget,
        over_core_budget=any(s.footprint.over_core_budget for s in summaries),
        send_lateness=lateness.summary(),
    )


class ProgressMerger:
    """Turns the TickProgress streams of several instances into one per tick: a tick is passed
    on once every instance still running has reported it. Counts add up; the percentiles are
    the highest of the instances' (an upper bound: the exact ones are in the merged series.csv)."""

    def __init__(self, instances: int, run_id: str, emit: Callable[[loadgen_pb2.TickProgress], None]) -> None:
        self._run_id = run_id
        self._emit = emit
        self._running = set(range(instances))
        self._last_tick = dict.fromkeys(range(instances), -1)
        self._pending: dict[int, list[loadgen_pb2.TickProgress]] = {}

    def add(self, instance: int, progress: loadgen_pb2.TickProgress) -> None:
        self._pending.setdefault(progress.tick, []).append(progress)
        self._last_tick[instance] = max(self._last_tick[instance], progress.tick)
        self._flush()

    def finish(self, instance: int) -> None:
        """The instance sends no more ticks (its run ended, or failed)."""
        self._running.discard(instance)
        self._flush()

    def _flush(self) -> None:
        complete = min((self._last_tick[i] for i in self._running), default=None)
        for tick in sorted(self._pending):
            if complete is not None and tick > complete:
                break
            parts = self._pending.pop(tick)
            self._emit(
                loadgen_pb2.TickProgress(
                    run_id=self._run_id,
                    tick=tick,
                    target_rate_per_s=sum(p.target_rate_per_s for p in parts),
                    sent=sum(p.sent for p in parts),
                    completed=sum(p.completed for p in parts),
                    errors=sum(p.errors for p in parts),
                    not_sent=sum(p.not_sent for p in parts),
                    in_flight=sum(p.in_flight for p in parts),
                    p50_ms=max(p.p50_ms for p in parts),
                    p90_ms=max(p.p90_ms for p in parts),
                    p99_ms=max(p.p99_ms for p in parts),
                )
            )


def _clock_offset_ns(run_info: dict[str, Any], reference: dict[str, Any], folder: Path) -> int:
    """What to add to this instance's perf_counter_ns() values to put them on the reference's."""
    try:
        own = int(run_info["wall_clock_epoch_ns"]) - int(run_info["perf_counter_ns"])
        return own - (int(reference["wall_clock_epoch_ns"]) - int(reference["perf_counter_ns"]))
    except (KeyError, TypeError, ValueError) as error:
        raise MergeError(f"{folder / RUN_FILE}: no clock anchor ({error})") from error
