"""series.csv, one row per one-second tick of a run: the row type, its writer and its reader.

A row is the tick's TickProgress (what the load generator streams to the controller) plus `ok`,
the successful answers of the tick, which the progress message does not carry, plus what the
inference service used during the tick (TickResources, sampled by the controller where it can
see the process; empty cells where it cannot, and in files written before these columns).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple, get_type_hints

from etude.v1 import loadgen_pb2

from .errors import ResultsError
from .layout import SERIES_FILE


class TickResources(NamedTuple):
    """What the inference service (its processes together) used during one tick; None: unknown."""

    inference_cpu_cores: float | None = None  # CPU seconds used per second (2.0: two cores busy)
    inference_rss_mb: float | None = None  # resident memory, MiB (the tick's highest sample)
    gpu_utilization_percent: float | None = None  # the device's busy time (NVML), 0..100
    gpu_memory_mb: float | None = None  # device memory the service's processes hold (NVML), MiB


class SeriesRow(NamedTuple):
    """What the load generator saw during one second, and what the inference service used."""

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
    inference_cpu_cores: float | None = None
    inference_rss_mb: float | None = None
    gpu_utilization_percent: float | None = None
    gpu_memory_mb: float | None = None

    @property
    def resources(self) -> TickResources:
        return TickResources(
            self.inference_cpu_cores, self.inference_rss_mb, self.gpu_utilization_percent, self.gpu_memory_mb
        )

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
RESOURCE_FIELDS: tuple[str, ...] = TickResources._fields
# The load generator's columns, which every series.csv has; the resource columns may be absent.
_REQUIRED_FIELDS = tuple(name for name in SERIES_FIELDS if name not in RESOURCE_FIELDS)
_INT_FIELDS = frozenset(name for name, kind in get_type_hints(SeriesRow).items() if kind is int)


def _parse_cell(name: str, cell: str | None) -> Any:
    if name in RESOURCE_FIELDS:
        return float(cell) if cell else None
    if cell is None:
        raise KeyError(name)
    return int(cell) if name in _INT_FIELDS else float(cell)


def parse_series(text: str, source: str = SERIES_FILE) -> list[SeriesRow]:
    """Parses series.csv text; raises ResultsError for a missing column or a bad value."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in _REQUIRED_FIELDS if name not in (reader.fieldnames or [])]
    if reader.fieldnames is not None and missing:
        raise ResultsError(f"{source}: missing columns {missing}")
    ticks = []
    for row in reader:
        try:
            ticks.append(SeriesRow(*(_parse_cell(name, row.get(name)) for name in SERIES_FIELDS)))
        except (KeyError, TypeError, ValueError) as error:
            raise ResultsError(f"{source}: bad row {row}: {error}") from error
    return ticks


def with_resources(rows: Iterable[SeriesRow], per_tick: Mapping[int, TickResources]) -> list[SeriesRow]:
    """`rows` with the resource columns of each tick in `per_tick` (the others unchanged)."""
    return [row._replace(**per_tick[row.tick]._asdict()) if row.tick in per_tick else row for row in rows]


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
