"""`etude workload fit`: the workload statistics of a real click log, in both parameterisations.

A team benchmarks with its own statistics without shipping its data: this reads a CSV of clicks
(session id, item id, optionally a timestamp), counts clicks per session and per item, and fits
both the classic power-law exponent (maximum likelihood for floor(Pareto(alpha)), as the
generator draws) and `scipy.stats.powerlaw` (a, loc, scale), as the original ETUDE profiler did.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from pathlib import Path

import numpy as np

from .generator import ScipyPowerLaw, fit_power_law_exponent


class ClickLogError(ValueError):
    """The click log cannot be read as sessions and items; the message says where, `field` which
    setting names what is wrong ("path", "session_column", "item_column", "timestamp_column")."""

    def __init__(self, message: str, *, field: str = "path") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ClickLogStatistics:
    num_clicks: int
    num_sessions: int
    num_items: int
    alpha_length: float
    alpha_clicks: float
    length_fit: ScipyPowerLaw
    clicks_fit: ScipyPowerLaw

    def to_yaml(self) -> str:
        """A `workload:` block for an experiment spec, each parameterisation ready to paste."""

        def fit(law: ScipyPowerLaw) -> str:
            return f"{{a: {law.a:.5g}, loc: {law.loc:.5g}, scale: {law.scale:.6g}}}"

        return (
            f"# {self.num_clicks:,} clicks, {self.num_sessions:,} sessions, {self.num_items:,} items\n"
            "workload:\n"
            f"  exponents: {{alpha_length: {self.alpha_length:.4f}, alpha_clicks: {self.alpha_clicks:.4f}}}\n"
            "  # or, as scipy.stats.powerlaw fits (the original ETUDE profiler's parameterisation):\n"
            f"  # powerlaw_fits: {{session_lengths: {fit(self.length_fit)},"
            f" click_counts: {fit(self.clicks_fit)}}}\n"
        )


def _delimiter(first_line: str) -> str:
    for delimiter in ("\t", ",", ";"):
        if delimiter in first_line:
            return delimiter
    return ","


@dataclass(frozen=True)
class ClickLogColumns:
    """Which columns of a click log hold what: header names or 0-based indices (as text, the way
    the command line and the spec give them); `timestamp` None when the log has none."""

    session: str = "0"
    item: str = "1"
    timestamp: str | None = None
    header: bool = True

    def named(self) -> list[tuple[str, str]]:
        """(field, column) of each column read, in the order `iter_clicks` yields them."""
        columns = [("session_column", self.session), ("item_column", self.item)]
        return columns + ([("timestamp_column", self.timestamp)] if self.timestamp is not None else [])


def _column_index(field: str, column: str, header: list[str] | None, path: Path) -> int:
    if column.isdigit():
        return int(column)
    if header is None:
        raise ClickLogError(
            f"{path}: column {column!r} is a name, but the log has no header row", field=field
        )
    if column not in header:
        raise ClickLogError(f"{path}: no column {column!r}; the header is {header}", field=field)
    return header.index(column)


# Rows read per chunk: the csv module and itemgetter run in C over a whole chunk.
CLICKS_PER_CHUNK = 1 << 14


def iter_click_chunks(
    path: Path, columns: ClickLogColumns = ClickLogColumns(), clicks_per_chunk: int = CLICKS_PER_CHUNK
) -> Iterator[tuple[list[str], ...]]:
    """The text of every click in log order, a chunk of up to `clicks_per_chunk` clicks at a
    time, as columns: (sessions, items) or (sessions, items, timestamps).

    The delimiter (tab, comma or semicolon) is taken from the first line; blank lines are
    skipped. Raises ClickLogError (its `field` says which setting or which part of the log is
    wrong) for a missing or unreadable file, an empty log, unknown columns, a short row or text
    that is not UTF-8; the file is read once and closed when the iterator is.
    """
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise ClickLogError(f"cannot read {path}: {error.strerror}", field="path") from error
    with handle:
        try:
            first_line = handle.readline()
            if not first_line.strip():
                raise ClickLogError(f"{path} is empty", field="path")
            handle.seek(0)
            rows = csv.reader(handle, delimiter=_delimiter(first_line))
            names = next(rows) if columns.header else None
            indices = [_column_index(field, column, names, path) for field, column in columns.named()]
            pick = itemgetter(*indices)
            column_getters = [itemgetter(index) for index in indices]
            found_clicks = False
            while True:
                first_line_number = rows.line_num + 1
                chunk = list(islice(rows, clicks_per_chunk))
                if not chunk:
                    break
                try:
                    # One C-level pass per column (a zip(*rows) transpose is ten times slower).
                    picked = tuple([*map(getter, chunk)] for getter in column_getters)
                except IndexError:
                    # A blank line (skipped) or a short row (refused): the slow path finds which.
                    rows_picked = _complete_rows(chunk, pick, indices, columns, path, first_line_number)
                    if not rows_picked:
                        continue
                    picked = tuple([row[column] for row in rows_picked] for column in range(len(indices)))
                found_clicks = True
                yield picked
        except UnicodeDecodeError as error:
            raise ClickLogError(f"{path} is not UTF-8 text: {error.reason}", field="path") from error
        except (OSError, csv.Error) as error:
            raise ClickLogError(f"cannot read {path}: {error}", field="path") from error
    if not found_clicks:
        raise ClickLogError(f"{path} holds no clicks", field="path")


def _complete_rows(
    chunk: list[list[str]],
    pick: Callable[[list[str]], tuple[str, ...]],
    indices: list[int],
    columns: ClickLogColumns,
    path: Path,
    first_line_number: int,
) -> list[tuple[str, ...]]:
    needed = max(indices) + 1
    picked = []
    for offset, row in enumerate(chunk):
        if len(row) >= needed:
            picked.append(pick(row))
        elif row:
            field = next(
                field for (field, _), index in zip(columns.named(), indices, strict=True) if index >= len(row)
            )
            # The line number counts one line per row (exact unless a quoted field spans lines).
            raise ClickLogError(
                f"{path}:{first_line_number + offset}: expected columns {indices} "
                f"({', '.join(f for f, _ in columns.named())}), got {row}",
                field=field,
            )
    return picked


def read_click_log(
    path: Path, session_column: str = "0", item_column: str = "1", *, header: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(session keys, item keys) of every click. Columns by header name or 0-based index;
    the delimiter (tab, comma or semicolon) is taken from the first line."""
    sessions: list[str] = []
    items: list[str] = []
    for chunk in iter_click_chunks(path, ClickLogColumns(session_column, item_column, header=header)):
        sessions.extend(chunk[0])
        items.extend(chunk[1])
    return np.asarray(sessions), np.asarray(items)


def fit_click_log(sessions: np.ndarray, items: np.ndarray) -> ClickLogStatistics:
    """Both parameterisations of the session-length and item click-count distributions."""
    _, session_lengths = np.unique(sessions, return_counts=True)
    _, click_counts = np.unique(items, return_counts=True)
    return fit_counts(session_lengths, click_counts)


def fit_counts(session_lengths: np.ndarray, click_counts: np.ndarray) -> ClickLogStatistics:
    """Both parameterisations from the clicks per session and per clicked item (a replay
    index has them without the log's keys: ReplayIndex.session_lengths, .item_click_counts)."""
    from scipy import stats

    jitter = np.random.default_rng(0)

    def scipy_fit(counts: np.ndarray) -> ScipyPowerLaw:
        # The generator draws floor(X); a continuous fit of the integers themselves is biased by
        # their point masses (regenerating from it was off by up to 0.39 in CDF on a test log),
        # so the fit sees counts + U[0, 1) (dequantised), which brings that to about 0.06.
        values = counts.astype(np.float64) + jitter.random(len(counts))
        a, loc, scale = stats.powerlaw.fit(values)
        return ScipyPowerLaw(float(a), float(loc), float(scale))

    return ClickLogStatistics(
        num_clicks=int(session_lengths.sum()),
        num_sessions=len(session_lengths),
        num_items=len(click_counts),
        alpha_length=fit_power_law_exponent(session_lengths),
        alpha_clicks=fit_power_law_exponent(click_counts),
        length_fit=scipy_fit(session_lengths),
        clicks_fit=scipy_fit(click_counts),
    )
