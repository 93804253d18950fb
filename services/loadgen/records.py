"""The files of one run: records.csv (one row per request), series.csv (one row per tick),
run.json (the clock anchor) and summary.json, written off the event loop.

Rows are handed over once per tick and written and flushed by one writer thread, so the event
loop never waits on the disk and a crash loses at most the last tick.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format

from etude.v1 import loadgen_pb2

RECORDS_FILE = "records.csv"
SERIES_FILE = "series.csv"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"

# Times are time.perf_counter_ns() values; run.json maps them to the wall clock:
# epoch_ns = wall_clock_epoch_ns + (t - perf_counter_ns).
RECORD_FIELDS = (
    "tick",
    "session_id",
    "click_index",
    "intended_send_ns",
    "actual_send_ns",
    "completion_ns",
    "status",
    "latency_from_intended_us",
    "latency_from_actual_us",
    "queue_us",
    "inference_us",
    "batch_size",
    "server_total_us",
)
SERIES_FIELDS = (
    "tick",
    "target_rate_per_s",
    "sent",
    "completed",
    "ok",
    "errors",
    "not_sent",
    "in_flight",
    "p50_ms",
    "p90_ms",
    "p99_ms",
)

Row = Sequence[Any]


class RunFiles:
    """Appends the rows of a run to its folder from a single writer thread (order preserved)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loadgen-records")
        self._pending: list[Future[None]] = []
        self._records: IO[str] | None = None
        self._series: IO[str] | None = None
        self._records_csv: Any = None
        self._series_csv: Any = None

    async def open(self, run_info: dict[str, Any]) -> None:
        """Creates the folder and the files with their headers; raises OSError when it cannot."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open, run_info)

    def _open(self, run_info: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / RUN_FILE).write_text(json.dumps(run_info, indent=2) + "\n")
        self._records = open(self.folder / RECORDS_FILE, "w", newline="")
        self._series = open(self.folder / SERIES_FILE, "w", newline="")
        self._records_csv = csv.writer(self._records)
        self._series_csv = csv.writer(self._series)
        self._records_csv.writerow(RECORD_FIELDS)
        self._series_csv.writerow(SERIES_FIELDS)
        self._records.flush()
        self._series.flush()

    def write(self, records: list[Row], series_row: Row | None = None) -> None:
        """Queues rows for the writer thread and returns at once; a write error surfaces here
        on a later call, or in close()."""
        self._raise_failed_writes()
        self._pending.append(self._executor.submit(self._write, records, series_row))

    def _write(self, records: list[Row], series_row: Row | None) -> None:
        assert self._records is not None and self._series is not None
        self._records_csv.writerows(records)
        self._records.flush()
        if series_row is not None:
            self._series_csv.writerow(series_row)
            self._series.flush()

    def _raise_failed_writes(self) -> None:
        still_pending = []
        for future in self._pending:
            if not future.done():
                still_pending.append(future)
            elif future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        self._pending = still_pending

    async def close(self, summary: loadgen_pb2.LoadSummary) -> None:
        """Writes what is queued and summary.json, closes the files, stops the thread."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close, summary)
            self._raise_failed_writes()
        finally:
            self._executor.shutdown(wait=False)

    def _close(self, summary: loadgen_pb2.LoadSummary) -> None:
        for handle in (self._records, self._series):
            if handle is not None:
                handle.close()
        (self.folder / SUMMARY_FILE).write_text(
            json_format.MessageToJson(
                summary, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
            )
            + "\n"
        )
