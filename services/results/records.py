"""records.csv, one row per request: the typed Record, the status constants, the one writer and
the one reader (columns as numpy arrays).

A column is added here and nowhere else: a field in Record (what the load generator writes) and
the same name in RecordColumns (what readers get). The header, the reader's parsing and types,
and the report's table of per-request timings (every `_us` column) follow from these two.
Times are time.perf_counter_ns() values of the load generator; run.json maps them to the wall
clock (epoch_ns = wall_clock_epoch_ns + (t - perf_counter_ns)).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple, get_type_hints

import numpy as np

from .errors import ResultsError
from .layout import RECORDS_FILE

# A request's status: a gRPC status code name, or one of these.
OK = "OK"
# Still in flight when the run was cancelled.
CANCELLED = "CANCELLED"
# The client raised instead of returning an outcome (a client bug).
CLIENT_ERROR = "CLIENT_ERROR"


class Record(NamedTuple):
    """One request, as the load generator saw it (one row of records.csv)."""

    tick: int  # the tick the request was sent in
    session_id: str
    click_index: int
    intended_send_ns: int
    actual_send_ns: int
    completion_ns: int
    status: str
    latency_from_intended_us: int
    latency_from_actual_us: int
    queue_us: int  # the server's split of its answer (0 unless OK)
    inference_us: int
    batch_size: int
    server_total_us: int
    # A router's calls to its catalog shards for the request's batch (0 unsharded): wall time,
    # the slowest shard's scoring, and bytes on the wire per request of the batch.
    shard_fanout_us: int = 0
    shard_compute_us: int = 0
    shard_wire_bytes: int = 0


RECORD_FIELDS: tuple[str, ...] = Record._fields


@dataclass(frozen=True, eq=False)
class RecordColumns:
    """records.csv as columns, one entry per request; the names and order of Record."""

    tick: np.ndarray
    session_id: np.ndarray
    click_index: np.ndarray
    intended_send_ns: np.ndarray
    actual_send_ns: np.ndarray
    completion_ns: np.ndarray
    status: np.ndarray
    latency_from_intended_us: np.ndarray
    latency_from_actual_us: np.ndarray
    queue_us: np.ndarray
    inference_us: np.ndarray
    batch_size: np.ndarray
    server_total_us: np.ndarray
    shard_fanout_us: np.ndarray
    shard_compute_us: np.ndarray
    shard_wire_bytes: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.status == OK

    def __len__(self) -> int:
        return int(self.tick.size)

    def column(self, name: str) -> np.ndarray:
        return getattr(self, name)  # type: ignore[no-any-return]

    def select(self, mask: np.ndarray) -> RecordColumns:
        """The rows where `mask` is true (or at the positions it lists), every column."""
        return RecordColumns(**{name: self.column(name)[mask] for name in RECORD_FIELDS})

    def rows(self) -> Iterable[Record]:
        """The rows as Records (plain Python values)."""
        return (Record(*row) for row in zip(*(self.column(n).tolist() for n in RECORD_FIELDS), strict=True))


if tuple(field.name for field in dataclasses.fields(RecordColumns)) != RECORD_FIELDS:
    raise TypeError("RecordColumns must name the fields of Record, in order")

# The numpy type of each column, from Record's annotations (text as Python str objects: no
# fixed width to truncate a long session id).
_DTYPES: dict[str, Any] = {
    name: {int: np.int64, str: object, float: np.float64}[annotation]
    for name, annotation in get_type_hints(Record).items()
}
# Columns added after records.csv was first written: absent from older files (read as 0).
OPTIONAL_FIELDS = frozenset({"shard_fanout_us", "shard_compute_us", "shard_wire_bytes"})
# The columns that hold durations: the report tabulates each of them.
TIMING_COLUMNS: tuple[str, ...] = tuple(name for name in RECORD_FIELDS if name.endswith("_us"))


def parse_records(text: str, source: str = RECORDS_FILE) -> RecordColumns:
    """Parses records.csv text into columns; raises ResultsError naming missing columns.

    numpy's C parser fills every column in one pass (about 10x faster than csv rows in Python)."""
    stream = io.StringIO(text, newline=None)  # universal newlines: csv writes \r\n
    header = next(csv.reader([stream.readline()]), None)
    if header is None:
        raise ResultsError(f"{source}: empty file (no header)")
    missing = [name for name in RECORD_FIELDS if name not in header and name not in OPTIONAL_FIELDS]
    if missing:
        raise ResultsError(f"{source}: missing columns {missing}")
    present = [name for name in RECORD_FIELDS if name in header]
    row_type = np.dtype([(name, _DTYPES[name]) for name in present])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": no request
            table = np.loadtxt(
                stream,
                delimiter=",",
                quotechar='"',
                comments=None,  # a session id may hold "#" (instance i of several: "17#1")
                dtype=row_type,
                usecols=[header.index(name) for name in present],
                ndmin=1,
            )
    except ValueError as error:
        raise ResultsError(f"{source}: {error}") from error
    columns = {name: np.ascontiguousarray(table[name]) for name in present}
    # Files written before a column existed read as zeros in it.
    absent = {name: np.zeros(table.size, dtype=_DTYPES[name]) for name in RECORD_FIELDS if name not in header}
    return RecordColumns(**columns, **absent)


def read_records(path: Path) -> RecordColumns:
    """The records.csv at `path` as columns (blocking: call it off the event loop)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ResultsError(f"{path}: {error.strerror or error}") from error
    return parse_records(text, str(path))


# Rows formatted per block between two flushes (see RecordsWriter.write).
WRITE_BLOCK_ROWS = 128


# One row as csv.writer writes it when no text field needs quoting: a format string builds it in
# a third of the time (records.csv is written for every request, from the load generator's process).
_ROW_FORMAT = (
    ",".join("%s" if annotation is str else "%d" for annotation in get_type_hints(Record).values()) + "\r\n"
)
# What makes csv.writer quote a field (the excel dialect: delimiter, quote, line ends).
_NEEDS_QUOTING = re.compile(r'[,"\r\n]')


def format_rows(rows: list[Record]) -> str:
    """`rows` as records.csv lines, byte for byte what csv.writer writes (tested)."""
    # Session ids are the only free text (status names never need quoting): one search per block.
    if _NEEDS_QUOTING.search("".join([row[1] for row in rows])) is None:
        try:
            return "".join(map(_ROW_FORMAT.__mod__, rows))
        except TypeError:
            pass  # a value of another type than Record declares (None, text): csv's way for those
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return text.getvalue()


class RecordsWriter:
    """Writes records.csv: the header at once, then rows in blocks (blocking calls: the load
    generator makes them from its writer thread)."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = open(path, "w", newline="")  # closed by close()
        csv.writer(self._file).writerow(RECORD_FIELDS)
        self._file.flush()

    def write(self, records: Iterable[Record]) -> None:
        """Appends rows and flushes, so that a crash loses at most the rows not handed over yet.

        In blocks of WRITE_BLOCK_ROWS, each flushed: formatting holds the GIL throughout, and a
        tick's rows at once (8,000 at 8,000 req/s) held the load generator's event loop for
        milliseconds, late sends included; a flush is a write call that lets the loop in."""
        rows = iter(records)
        while block := list(itertools.islice(rows, WRITE_BLOCK_ROWS)):
            self._file.write(format_rows(block))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_records(path: Path, records: Iterable[Record]) -> None:
    """records.csv at `path` with `records`, at once."""
    writer = RecordsWriter(path)
    try:
        writer.write(records)
    finally:
        writer.close()
