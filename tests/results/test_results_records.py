"""The run files of the results layer: one definition of each format, written and read back."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from etude.services.report.analysis import timings
from etude.services.report.sections import _timing_blocks
from etude.services.report.trials import TrialReport
from etude.services.results.errors import ResultsError
from etude.services.results.layout import RECORDS_FILE, RUN_FILE, SERIES_FILE, SUMMARY_FILE
from etude.services.results.records import (
    OK,
    RECORD_FIELDS,
    TIMING_COLUMNS,
    WRITE_BLOCK_ROWS,
    Record,
    format_rows,
    parse_records,
    read_records,
    write_records,
)
from etude.services.results.run import RunWriter, parse_summary, read_run_info
from etude.services.results.series import SERIES_FIELDS, SeriesRow, read_series, write_series

from etude.v1 import experiment_pb2, loadgen_pb2

RECORDS = [
    Record(0, "7", 0, 1_000, 1_200, 9_000, OK, 8, 7, 2, 3, 4, 5),
    Record(0, "8", 0, 2_000, 2_100, 5_000, "DEADLINE_EXCEEDED", 3, 2, 0, 0, 0, 0),
    Record(1, "7", 1, 3_000, 3_050, 20_000, OK, 17, 16, 6, 7, 2, 15),
]


def test_the_column_list_is_defined_once_writer_header_reader_columns_and_record_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / RECORDS_FILE
    write_records(path, RECORDS)
    header = path.read_text().splitlines()[0].split(",")
    columns = [field.name for field in dataclasses.fields(read_records(path))]
    assert header == columns == list(RECORD_FIELDS) == list(Record._fields)
    # Every duration column reaches the report's per-request timing table.
    assert set(TIMING_COLUMNS) == {name for name in Record._fields if name.endswith("_us")}
    result = experiment_pb2.TrialResult(trial=experiment_pb2.Trial(trial_id="t1"))
    (_, _, table) = _timing_blocks([TrialReport(result, timings=timings(read_records(path)))])
    assert table.header[2:] == tuple(f"{name} p50 / p90 ms" for name in TIMING_COLUMNS)  # type: ignore[attr-defined]


def test_records_round_trip_from_the_writer_to_the_columnar_reader(tmp_path: Path) -> None:
    path = tmp_path / RECORDS_FILE
    write_records(path, RECORDS)
    columns = read_records(path)
    assert len(columns) == 3
    assert list(columns.rows()) == RECORDS
    assert columns.tick.dtype == np.int64 and columns.latency_from_intended_us.dtype == np.int64
    assert columns.ok.tolist() == [True, False, True]
    assert columns.select(columns.ok).session_id.tolist() == ["7", "7"]


def test_an_empty_run_reads_as_empty_columns(tmp_path: Path) -> None:
    path = tmp_path / RECORDS_FILE
    write_records(path, [])
    columns = read_records(path)
    assert len(columns) == 0 and columns.latency_from_intended_us.dtype == np.int64


def test_a_missing_column_is_named_and_extra_columns_are_ignored() -> None:
    header = ",".join(name for name in RECORD_FIELDS if name != "queue_us")
    with pytest.raises(ResultsError, match=r"missing columns \['queue_us'\]"):
        parse_records(header + "\n", "trial/records.csv")
    extra = ",".join((*RECORD_FIELDS, "note")) + "\n" + ",".join(map(str, (*RECORDS[0], "x"))) + "\n"
    assert list(parse_records(extra).rows()) == [RECORDS[0]]


def test_a_series_row_is_the_tick_progress_plus_its_ok_count_and_round_trips(tmp_path: Path) -> None:
    progress = loadgen_pb2.TickProgress(
        run_id="r", tick=3, target_rate_per_s=12.5, sent=12, completed=11, errors=1, not_sent=1,
        in_flight=2, p50_ms=1.5, p90_ms=2.25, p99_ms=4.0,
    )  # fmt: skip
    row = SeriesRow.of(progress, ok=10)
    assert row.offered == 13 and list(SeriesRow._fields) == list(SERIES_FIELDS)
    path = tmp_path / SERIES_FILE
    write_series(path, [row])
    assert path.read_text().splitlines()[0] == ",".join(SERIES_FIELDS)
    assert read_series(path) == [row]


async def test_the_run_writer_writes_every_file_of_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    writer = RunWriter(folder)
    await writer.open({"run_id": "r", "perf_counter_ns": 1, "wall_clock_epoch_ns": 2})
    row = SeriesRow(0, 2.0, 2, 2, 1, 1, 0, 0, 1.0, 2.0, 3.0)
    writer.write(RECORDS[:2], row)
    writer.write(RECORDS[2:])
    await writer.close(loadgen_pb2.LoadSummary(run_id="r", requests_sent=3))

    assert list(read_records(folder / RECORDS_FILE).rows()) == RECORDS
    assert read_series(folder / SERIES_FILE) == [row]
    assert read_run_info(folder)["run_id"] == "r"
    assert parse_summary((folder / SUMMARY_FILE).read_text()).requests_sent == 3
    assert (folder / RUN_FILE).read_text().endswith("}\n")


def test_text_as_the_csv_writer_wrote_it_parses_whatever_its_line_ends_and_quoting(tmp_path: Path) -> None:
    long_id = "session, with a comma and " + "x" * 200
    rows = [
        *RECORDS,
        Record(2, long_id, 0, 4_000, 4_000, 5_000, OK, 1, 1, 0, 0, 1, 0),
        Record(2, "17#1", 0, 4_000, 4_000, 5_000, OK, 1, 1, 0, 0, 1, 0),  # instance 1's session
    ]
    path = tmp_path / RECORDS_FILE
    write_records(path, rows)
    raw = path.read_bytes().decode()  # as a GCS download gives it: \r\n kept
    assert "\r\n" in raw
    assert list(parse_records(raw).rows()) == rows


def test_records_written_before_the_shard_columns_read_them_as_zeros() -> None:
    old_fields = [name for name in RECORD_FIELDS if not name.startswith("shard_")]
    text = (
        ",".join(old_fields) + "\n" + ",".join(str(value) for value in RECORDS[0][: len(old_fields)]) + "\n"
    )
    columns = parse_records(text)
    assert columns.server_total_us.tolist() == [5]
    assert columns.shard_fanout_us.tolist() == [0] and columns.shard_wire_bytes.tolist() == [0]


async def test_a_run_closed_while_being_cancelled_still_gets_its_summary(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path / "run")
    await writer.open({"run_id": "r"})
    # The writer thread is busy, so the close waits in its queue when the caller is cancelled:
    # it must not be withdrawn from there.
    busy = threading.Event()
    writer._executor.submit(busy.wait, 10)
    closing = asyncio.ensure_future(writer.close(loadgen_pb2.LoadSummary(run_id="r", requests_sent=3)))
    await asyncio.sleep(0.05)
    closing.cancel()
    await asyncio.sleep(0.05)
    busy.set()
    with pytest.raises(asyncio.CancelledError):
        await closing
    summary = parse_summary((tmp_path / "run" / SUMMARY_FILE).read_text())
    assert (summary.run_id, summary.requests_sent) == ("r", 3)


def test_rows_written_in_several_blocks_read_back_whole_and_in_order(tmp_path: Path) -> None:
    rows = [
        Record(index // 100, f"s{index}", index % 7, index, index + 1, index + 2, OK, 2, 1, 0, 0, 1, 0)
        for index in range(WRITE_BLOCK_ROWS * 3 + 5)
    ]
    path = tmp_path / RECORDS_FILE
    write_records(path, iter(rows))  # any iterable, consumed block by block
    assert list(read_records(path).rows()) == rows


@pytest.mark.parametrize(
    "session_id",
    ["7", "17#1", "", "with, a comma", 'a "quoted" id', "two\nlines", "cr\rhere", "ünïcode"],
)
def test_rows_are_formatted_byte_for_byte_as_the_csv_writer_formats_them(session_id: str) -> None:
    rows = [*RECORDS, Record(2, session_id, 0, 4_000, 4_000, 5_000, OK, 1, 1, 0, 0, 1, 0, 3, 2, 1)]
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    assert format_rows(rows) == text.getvalue()


def test_a_value_of_another_type_than_the_record_declares_is_still_written_as_csv_writes_it() -> None:
    rows = [RECORDS[0]._replace(queue_us=None), RECORDS[1]._replace(batch_size="n/a")]  # type: ignore[arg-type]
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    assert format_rows(rows) == text.getvalue()
