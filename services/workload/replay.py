"""Replay of a real click log: its sessions in the log's order, item ids mapped to 1..N.

No gRPC here. One streaming pass over the log (fit.py's reader) builds an index on disk: per
click, the session's index and the item's id as int32 (and the timestamp as float64) in
memory-mapped files, then one stable reordering by session. Memory holds the two key maps (one
entry per distinct session and item) and the per-session offsets, never the log's text.

The rules a replay follows:
- Sessions come in the order of their first click in the log; each session's clicks in log
  order. Session i (0-based) of the log has the id i + 1; part p of n takes sessions p, p + n,
  p + 2n, ... so n load generators split one log.
- Item ids (any strings) become 1..N in the order of their first appearance in the file (the
  first row's item is 1): the same log always maps the same way, computed in the one pass.
- Every session is sent whole, however long (the models read its last 50 clicks).
- With a timestamp column, each click carries its offset in seconds from the log's earliest
  timestamp (so all offsets are >= 0); timestamps are numbers of seconds or ISO 8601 text.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from etude.v1 import workload_pb2

from .fit import ClickLogColumns, ClickLogError, iter_clicks
from .generator import (
    DEFAULT_SESSIONS_PER_BATCH,
    MAX_CATALOG_SIZE,
    InvalidWorkloadSpec,
    SessionBatch,
    _require_int,
)

# Clicks one replay batch may hold: ~13 MB as a SessionBatch message with offsets, far below
# gRPC's 64 MiB. A session longer than this (no real one is) is refused when indexing.
MAX_CLICKS_PER_REPLAY_BATCH = 2**20
# Clicks indexed per chunk before appending to the index files (a few MB of buffers).
_CHUNK_CLICKS = 1 << 18
# Positions gathered per step when the index is reordered by session.
_REORDER_CLICKS = 1 << 22
# Ids are int32 in the index.
MAX_REPLAY_CLICKS = 2**31 - 1


@dataclass(frozen=True)
class ReplaySource:
    """A click log (a local path, as the spec gives it) and which of its columns hold the
    session, the item and the timestamp."""

    path: str
    columns: ClickLogColumns = field(default_factory=ClickLogColumns)


def _timestamp_parser(first: str, path: Path) -> Callable[[str], float]:
    """Seconds (float) from a timestamp's text: numbers as they are, else ISO 8601 (UTC when
    the text names no zone); the first click's timestamp decides which for the whole log."""
    try:
        float(first)
    except ValueError:
        pass
    else:
        return float

    def iso_seconds(text: str) -> float:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()

    try:
        iso_seconds(first)
    except ValueError:
        raise ClickLogError(
            f"{path}: timestamp {first!r} is neither a number of seconds nor ISO 8601",
            field="timestamp_column",
        ) from None
    return iso_seconds


class ReplayIndex:
    """A click log indexed for replay: the clicks ordered by session, in files it owns.

    `item_ids` (int32, 1..num_items) and `click_offsets_s` (float64, or None without
    timestamps) are memory-mapped, ordered by session; session i's clicks are
    [session_offsets[i], session_offsets[i + 1]). `close()` (or garbage collection) deletes
    the files.
    """

    def __init__(
        self,
        folder: Path,
        session_offsets: np.ndarray,
        item_ids: np.ndarray,
        click_offsets_s: np.ndarray | None,
        num_items: int,
    ) -> None:
        self.folder = folder
        self.session_offsets = session_offsets
        self.item_ids = item_ids
        self.click_offsets_s = click_offsets_s
        self.num_items = num_items
        self._remove = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)

    @property
    def num_sessions(self) -> int:
        return int(self.session_offsets.size - 1)

    @property
    def num_clicks(self) -> int:
        return int(self.session_offsets[-1])

    @property
    def has_timestamps(self) -> bool:
        return self.click_offsets_s is not None

    def close(self) -> None:
        """Deletes the index files (batches already made are copies and stay valid)."""
        self._remove()

    def session(self, index: int) -> np.ndarray:
        """The item ids of the log's session `index` (0-based, in log order), oldest first."""
        start, stop = self.session_offsets[index], self.session_offsets[index + 1]
        return np.asarray(self.item_ids[start:stop], dtype=np.int64)

    def batches(
        self,
        sessions_per_batch: int,
        *,
        partition: int = 0,
        partition_count: int = 1,
        total_clicks: int | None = None,
    ) -> Iterator[SessionBatch]:
        """The sessions of part `partition` of `partition_count` (sessions partition,
        partition + n, ...), in log order, in batches of up to `sessions_per_batch` sessions
        and MAX_CLICKS_PER_REPLAY_BATCH clicks; with `total_clicks`, only that many clicks
        (the last session cut short). Session ids are log positions + 1, n apart."""
        if not 1 <= partition_count:
            raise InvalidWorkloadSpec(
                "session_partition_count", f"session_partition_count must be >= 1, got {partition_count}"
            )
        if not 0 <= partition < partition_count:
            raise InvalidWorkloadSpec(
                "session_partition",
                f"session_partition must be in 0..{partition_count - 1} "
                f"(below session_partition_count {partition_count}), got {partition}",
            )
        if sessions_per_batch < 1:
            raise InvalidWorkloadSpec(
                "sessions_per_batch", f"sessions_per_batch must be >= 1, got {sessions_per_batch}"
            )
        return self._batches(sessions_per_batch, partition, partition_count, total_clicks)

    def _batches(
        self, sessions_per_batch: int, partition: int, step: int, total_clicks: int | None
    ) -> Iterator[SessionBatch]:
        remaining = total_clicks
        next_session = partition
        while next_session < self.num_sessions and (remaining is None or remaining > 0):
            sessions = np.arange(
                next_session,
                min(next_session + sessions_per_batch * step, self.num_sessions),
                step,
                dtype=np.int64,
            )
            starts = self.session_offsets[sessions]
            lengths = self.session_offsets[sessions + 1] - starts
            ends = np.cumsum(lengths)
            # Fewer sessions when their clicks would pass the batch bound (at least one fits).
            fitting = max(1, int(np.searchsorted(ends, MAX_CLICKS_PER_REPLAY_BATCH, side="right")))
            sessions, starts, lengths, ends = (
                sessions[:fitting],
                starts[:fitting],
                lengths[:fitting],
                ends[:fitting],
            )
            batch = self._gather(sessions, starts, lengths, ends, step)
            if remaining is not None:
                batch = batch.truncated(remaining)
                remaining -= batch.num_clicks
            yield batch
            next_session = int(sessions[-1]) + step

    def _gather(
        self, sessions: np.ndarray, starts: np.ndarray, lengths: np.ndarray, ends: np.ndarray, step: int
    ) -> SessionBatch:
        num_clicks = int(ends[-1])
        if step == 1:
            # Consecutive sessions: their clicks are one slice of the index.
            positions: slice | np.ndarray = slice(int(starts[0]), int(starts[0]) + num_clicks)
        else:
            # Position of each click: its session's start plus its rank inside the session.
            positions = np.arange(num_clicks, dtype=np.int64)
            positions += np.repeat(starts - (ends - lengths), lengths)
        item_ids = np.asarray(self.item_ids[positions], dtype=np.int64)
        offsets_s = None
        if self.click_offsets_s is not None:
            offsets_s = np.array(self.click_offsets_s[positions], dtype=np.float64)
        return SessionBatch(int(sessions[0]) + 1, lengths.astype(np.int32), item_ids, offsets_s, step)


def index_click_log(source: ReplaySource, folder: Path | None = None) -> ReplayIndex:
    """Reads `source` once and returns its index (files in a new folder under `folder`, by
    default the system's temporary folder). Raises ClickLogError saying what is wrong."""
    if not source.path:
        raise ClickLogError("no click log named (the path is empty)", field="path")
    if "://" in source.path:
        raise ClickLogError(
            f"{source.path}: the workload service reads local files only; copy the log next to it",
            field="path",
        )
    path = Path(source.path)
    if path.exists() and not path.is_file():
        raise ClickLogError(f"cannot read {path}: not a regular file", field="path")
    index_folder = Path(tempfile.mkdtemp(prefix="etude-replay-", dir=folder))
    try:
        return _build(path, source.columns, index_folder)
    except BaseException:
        shutil.rmtree(index_folder, ignore_errors=True)
        raise


def _build(path: Path, columns: ClickLogColumns, folder: Path) -> ReplayIndex:
    with_timestamps = columns.timestamp is not None
    session_file, item_file, time_file = (folder / name for name in ("sessions", "items", "times"))
    session_of: dict[str, int] = {}
    item_of: dict[str, int] = {}
    num_clicks = 0
    with session_file.open("wb") as sessions_out, item_file.open("wb") as items_out:
        times_out = time_file.open("wb") if with_timestamps else None
        try:
            session_column, item_column = array("i"), array("i")
            time_column = array("d")
            to_seconds: Callable[[str], float] | None = None
            clicks = iter_clicks(path, columns)
            # dict.setdefault numbers a new key with the next index in one C call.
            new_session, new_item = session_of.setdefault, item_of.setdefault
            for click in clicks:
                session_column.append(new_session(click[0], len(session_of)))
                item_column.append(new_item(click[1], len(item_of) + 1))
                if with_timestamps:
                    if to_seconds is None:
                        to_seconds = _timestamp_parser(click[2], path)
                    try:
                        time_column.append(to_seconds(click[2]))
                    except ValueError:
                        raise ClickLogError(
                            f"{path}: click {num_clicks + len(session_column)} has the "
                            f"timestamp {click[2]!r}, unlike the first click's",
                            field="timestamp_column",
                        ) from None
                if len(session_column) >= _CHUNK_CLICKS:
                    num_clicks += len(session_column)
                    _flush(session_column, item_column, time_column, sessions_out, items_out, times_out)
                    if num_clicks > MAX_REPLAY_CLICKS:
                        raise ClickLogError(
                            f"{path} holds more than {MAX_REPLAY_CLICKS:,} clicks", field="path"
                        )
            num_clicks += len(session_column)
            _flush(session_column, item_column, time_column, sessions_out, items_out, times_out)
        finally:
            if times_out is not None:
                times_out.close()
    num_sessions, num_items = len(session_of), len(item_of)
    del session_of, item_of
    if num_clicks > MAX_REPLAY_CLICKS:
        raise ClickLogError(f"{path} holds more than {MAX_REPLAY_CLICKS:,} clicks", field="path")
    return _order_by_session(path, folder, num_clicks, num_sessions, num_items, with_timestamps)


def _flush(
    session_column: array[int],
    item_column: array[int],
    time_column: array[float],
    sessions_out: object,
    items_out: object,
    times_out: object | None,
) -> None:
    for column, out in ((session_column, sessions_out), (item_column, items_out), (time_column, times_out)):
        if out is not None:
            column.tofile(out)  # type: ignore[arg-type]
            del column[:]


def _order_by_session(
    path: Path, folder: Path, num_clicks: int, num_sessions: int, num_items: int, timed: bool
) -> ReplayIndex:
    """Reorders the clicks, stably, by session index (= order of first click); writes the
    ordered item ids (and offsets from the earliest timestamp) and drops the log-order files."""
    sessions = np.memmap(folder / "sessions", dtype=np.int32, mode="r", shape=(num_clicks,))
    lengths = np.bincount(sessions, minlength=num_sessions)
    longest = int(lengths.max())
    if longest > MAX_CLICKS_PER_REPLAY_BATCH:
        raise ClickLogError(
            f"{path}: session {int(lengths.argmax()) + 1} (in order of first clicks) has "
            f"{longest:,} clicks; a replayed session may have at most {MAX_CLICKS_PER_REPLAY_BATCH:,}",
            field="path",
        )
    session_offsets = np.zeros(num_sessions + 1, dtype=np.int64)
    np.cumsum(lengths, out=session_offsets[1:])
    del lengths
    # A log already grouped by session (the usual case) needs no reordering at all.
    grouped = bool(np.all(sessions[1:] >= sessions[:-1]))
    order = None if grouped else np.argsort(sessions, kind="stable")
    del sessions
    (folder / "sessions").unlink()

    item_ids = _reordered(folder / "items", folder / "items.ordered", np.int32, num_clicks, order)
    click_offsets_s = None
    if timed:
        times = np.memmap(folder / "times", dtype=np.float64, mode="r", shape=(num_clicks,))
        earliest_s = float(times.min())
        if not math.isfinite(earliest_s) or not math.isfinite(float(times.max())):
            raise ClickLogError(f"{path}: a timestamp is not a finite number", field="timestamp_column")
        del times
        click_offsets_s = _reordered(
            folder / "times", folder / "times.ordered", np.float64, num_clicks, order, minus=earliest_s
        )
    return ReplayIndex(folder, session_offsets, item_ids, click_offsets_s, num_items)


def _reordered(
    source: Path,
    target: Path,
    dtype: type,
    num_clicks: int,
    order: np.ndarray | None,
    minus: float = 0.0,
) -> np.ndarray:
    """`source` (log order) gathered by `order` (None: as it is) into `target`, read-only."""
    if order is None and not minus:
        source.rename(target)
    else:
        unordered = np.memmap(source, dtype=dtype, mode="r", shape=(num_clicks,))
        ordered = np.memmap(target, dtype=dtype, mode="w+", shape=(num_clicks,))
        for start in range(0, num_clicks, _REORDER_CLICKS):
            stop = min(start + _REORDER_CLICKS, num_clicks)
            chunk = unordered[start:stop] if order is None else unordered[order[start:stop]]
            ordered[start:stop] = chunk - minus if minus else chunk
        ordered.flush()
        del unordered, ordered
        source.unlink()
    return np.memmap(target, dtype=dtype, mode="r", shape=(num_clicks,))


def require_catalog_covers(index: ReplayIndex, catalog_size: int, path: str) -> None:
    """Refuses a catalog smaller than the log's distinct items (the mapped ids go up to N)."""
    if catalog_size < index.num_items:
        raise InvalidWorkloadSpec(
            "catalog_size",
            f"catalog_size {catalog_size:,} is below the {index.num_items:,} distinct items of "
            f"{path}; give catalog_size >= {index.num_items:,}",
        )


@dataclass(frozen=True)
class ReplayRequest:
    """A StreamSessions call that replays a log: the log, the catalog and how to deliver it."""

    source: ReplaySource
    catalog_size: int
    sessions_per_batch: int = DEFAULT_SESSIONS_PER_BATCH
    partition: int = 0
    partition_count: int = 1
    total_clicks: int | None = None

    def __post_init__(self) -> None:
        if not self.source.path:
            raise InvalidWorkloadSpec("replay.path", "replay.path must name a click log (a local CSV or TSV)")
        _require_int("catalog_size", self.catalog_size, 1, MAX_CATALOG_SIZE)
        _require_int("sessions_per_batch", self.sessions_per_batch, 1, None, " (0 in the proto means 1,024)")
        _require_int("session_partition_count", self.partition_count, 1, None, " (0 in the proto means 1)")
        _require_int(
            "session_partition",
            self.partition,
            0,
            self.partition_count - 1,
            f" (below session_partition_count {self.partition_count})",
        )
        if self.total_clicks is not None:
            _require_int("total_clicks", self.total_clicks, 0, None, " (0 in the proto: the whole log)")

    @classmethod
    def from_proto(cls, spec: workload_pb2.WorkloadSpec) -> ReplayRequest:
        """Validates a WorkloadSpec whose statistics are `replay`; raises InvalidWorkloadSpec."""
        replay = spec.replay
        columns = ClickLogColumns(
            session=replay.session_column or "0",
            item=replay.item_column or "1",
            timestamp=replay.timestamp_column or None,
            header=not replay.no_header,
        )
        return cls(
            source=ReplaySource(replay.path, columns),
            catalog_size=spec.catalog_size,
            sessions_per_batch=spec.sessions_per_batch or DEFAULT_SESSIONS_PER_BATCH,
            partition=spec.session_partition,
            partition_count=spec.session_partition_count or 1,
            total_clicks=spec.total_clicks or None,
        )

    def batches(self, index: ReplayIndex) -> Iterator[SessionBatch]:
        """This request's batches of `index` (the index of `source`), after refusing a catalog
        smaller than the log's N."""
        require_catalog_covers(index, self.catalog_size, self.source.path)
        return index.batches(
            self.sessions_per_batch,
            partition=self.partition,
            partition_count=self.partition_count,
            total_clicks=self.total_clicks,
        )
