"""series.csv, one row per one-second tick of a run: the row type, its writer and its reader.

A row is the tick's TickProgress (what the load generator streams to the controller) plus `ok`,
the successful answers of the tick, which the progress message does not carry.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import IO, NamedTuple, get_type_hints

from etude.v1 import loadgen_pb2

from .errors import ResultsError
from .layout import SERIES_FILE


class SeriesRow(NamedTuple):
    """What the load generator saw during one second."""

    tick: int
    target_rate_per_s: float
    sent: int
    completed: int
    ok: int  # OK answers that arrived during this tick (achieved throughput)
    errors: int
    not_sent: int
    in_flight: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def offered(self) -> int:
        """The whole requests the ramp called for in this tick (sent or not)."""
        return self.sent + self.not_sent

    @classmethod
    def of(cls, progress: loadgen_pb2.TickProgress, ok: int) -> SeriesRow:
        """The row of a tick from its progress message and its OK count."""
        return cls(
            progress.tick,
            progress.target_rate_per_s,
            progress.sent,
            progress.completed,
            ok,
            progress.errors,
            progress.not_sent,
            progress.in_flight,
            progress.p50_ms,
            progress.p90_ms,
            progress.p99_ms,
        )


SERIES_FIELDS: tuple[str, ...] = SeriesRow._fields
_TYPES = dict(get_type_hints(SeriesRow))


def parse_series(text: str, source: str = SERIES_FILE) -> list[SeriesRow]:
    """Parses series.csv text; raises ResultsError for a missing column or a bad value."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in SERIES_FIELDS if name not in (reader.fieldnames or [])]
    if reader.fieldnames is not None and missing:
        raise ResultsError(f"{source}: missing columns {missing}")
    ticks = []
    for row in reader:
        try:
            ticks.append(SeriesRow(*(_TYPES[name](row[name]) for name in SERIES_FIELDS)))
        except (KeyError, TypeError, ValueError) as error:
            raise ResultsError(f"{source}: bad row {row}: {error}") from error
    return ticks


def read_series(path: Path) -> list[SeriesRow]:
    """The series.csv at `path` (blocking: call it off the event loop)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ResultsError(f"{path}: {error.strerror or error}") from error
    return parse_series(text, str(path))


class SeriesWriter:
    """Writes series.csv: the header at once, then a row per tick, flushed (blocking calls)."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = open(path, "w", newline="")  # closed by close()
        self._csv = csv.writer(self._file)
        self._csv.writerow(SERIES_FIELDS)
        self._file.flush()

    def write(self, rows: Iterable[SeriesRow]) -> None:
        self._csv.writerows(rows)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_series(path: Path, rows: Iterable[SeriesRow]) -> None:
    """series.csv at `path` with `rows`, at once."""
    writer = SeriesWriter(path)
    try:
        writer.write(rows)
    finally:
        writer.close()
