"""The files of one run (one load test) together: run.json (the clock anchor), records.csv,
series.csv and summary.json; the writer a load generator fills while it runs.

RunWriter takes a tick's rows in one call and writes and flushes them from one writer thread,
so the event loop never waits on the disk and a crash loses at most the last tick.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from etude.v1 import loadgen_pb2

from .errors import ResultsError
from .layout import RECORDS_FILE, RUN_FILE, SERIES_FILE, SUMMARY_FILE
from .records import Record, RecordsWriter
from .series import SeriesRow, SeriesWriter


def write_run_info(folder: Path, run_info: dict[str, Any]) -> None:
    (folder / RUN_FILE).write_text(json.dumps(run_info, indent=2) + "\n")


def read_run_info(folder: Path) -> dict[str, Any]:
    """run.json of the run in `folder`; raises ResultsError."""
    path = folder / RUN_FILE
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ResultsError(f"{path}: {error}") from error
    if not isinstance(value, dict):
        raise ResultsError(f"{path}: not a JSON object")
    return value


def summary_json(summary: loadgen_pb2.LoadSummary) -> str:
    """summary.json's text: the LoadSummary with every field, proto field names."""
    return (
        json_format.MessageToJson(
            summary, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )
        + "\n"
    )


def write_summary(folder: Path, summary: loadgen_pb2.LoadSummary) -> None:
    (folder / SUMMARY_FILE).write_text(summary_json(summary))


def parse_summary(text: str, source: str = SUMMARY_FILE) -> loadgen_pb2.LoadSummary:
    try:
        return json_format.Parse(text, loadgen_pb2.LoadSummary())
    except json_format.ParseError as error:
        raise ResultsError(f"{source}: not an etude.v1.LoadSummary: {error}") from error


class RunWriter:
    """Appends the rows of a run to its folder from a single writer thread (order preserved)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-files")
        self._pending: list[Future[None]] = []
        self._records: RecordsWriter | None = None
        self._series: SeriesWriter | None = None

    async def open(self, run_info: dict[str, Any]) -> None:
        """Creates the folder and the files with their headers; raises OSError when it cannot."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open, run_info)

    def _open(self, run_info: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_run_info(self.folder, run_info)
        self._records = RecordsWriter(self.folder / RECORDS_FILE)
        self._series = SeriesWriter(self.folder / SERIES_FILE)

    def write(self, records: Sequence[Record], series_row: SeriesRow | None = None) -> None:
        """Queues a tick's rows for the writer thread and returns at once; a write error surfaces
        here on a later call, or in close()."""
        self._raise_failed_writes()
        self._pending.append(self._executor.submit(self._write, records, series_row))

    def _write(self, records: Sequence[Record], series_row: SeriesRow | None) -> None:
        assert self._records is not None and self._series is not None
        self._records.write(records)
        if series_row is not None:
            self._series.write((series_row,))

    def _raise_failed_writes(self) -> None:
        still_pending = []
        for future in self._pending:
            if not future.done():
                still_pending.append(future)
            elif future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        self._pending = still_pending

    async def close(self, summary: loadgen_pb2.LoadSummary) -> None:
        """Writes what is queued and summary.json, closes the files, stops the thread.

        Returns only once that is done, even when cancelled meanwhile (the cancellation is passed
        on afterwards): a cancelled await would otherwise withdraw the write before the thread
        took it, and a process stopping with its calls cancelled would end without summary.json.
        """
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(self._executor, self._close, summary)
        cancelled = False
        try:
            while not closing.done():
                try:
                    await asyncio.shield(closing)
                except asyncio.CancelledError:
                    cancelled = True
            closing.result()
            self._raise_failed_writes()
        finally:
            self._executor.shutdown(wait=False)
        if cancelled:
            raise asyncio.CancelledError

    def _close(self, summary: loadgen_pb2.LoadSummary) -> None:
        for writer in (self._records, self._series):
            if writer is not None:
                writer.close()
        write_summary(self.folder, summary)
