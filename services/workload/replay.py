"""Replay of a real click log: its sessions in the log's order, item ids mapped to 1..N.

No gRPC here. One streaming pass over the log (fit.py's reader) writes, per click, the
session's index and the item's id as int32 (and the timestamp as float64) to files; a stable
counting sort by session, a chunk at a time, then writes the memory-mapped index. Memory holds
the two key maps (one entry per distinct session and item), the per-session offsets and one
chunk, never the log's text.

The rules a replay follows:
- Sessions come in the order of their first click in the log; each session's clicks in log
  order. Session i (0-based) of the log has the id i + 1; part p of n takes sessions p, p + n,
  p + 2n, ... so n load generators split one log.
- Item ids (any strings) become 1..N in the order of their first appearance in the file (the
  first row's item is 1): the same log always maps the same way, computed in the one pass.
- Every session is sent whole, however long (the models read its last 50 clicks).
- With a timestamp column, each click carries its offset in seconds from the log's earliest
  timestamp (so all offsets are >= 0); timestamps are numbers of seconds or ISO 8601 text.

Over 500 lines because indexing, the on-disk index and streaming its sessions are one format
with one owner (fit.py keeps the reading of the log itself).
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

from .fit import ClickLogColumns, ClickLogError, iter_click_chunks
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
# Clicks placed per step when the index is ordered by session (about 70 bytes of temporaries
# each: some 18 MB).
_REORDER_CLICKS = 1 << 18
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

    `item_ids` (int32, 1..num_items) and `timestamps_s` (float64 seconds as in the log, or
    None without timestamps) are memory-mapped, ordered by session; session i's clicks are
    [session_offsets[i], session_offsets[i + 1]). `close()` (or garbage collection) deletes
    the files.
    """

    def __init__(
        self,
        folder: Path,
        session_offsets: np.ndarray,
        item_ids: np.ndarray,
        timestamps_s: np.ndarray | None,
        earliest_s: float,
        latest_s: float,
        num_items: int,
    ) -> None:
        self.folder = folder
        self.session_offsets = session_offsets
        self.item_ids = item_ids
        self.timestamps_s = timestamps_s
        self.earliest_s = earliest_s
        self.latest_s = latest_s
        self.num_items = num_items
        self._remove = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)

    @property
    def num_sessions(self) -> int:
        return int(self.session_offsets.size - 1)

    @property
    def num_clicks(self) -> int:
        return int(self.session_offsets[-1])

    @property
    def session_lengths(self) -> np.ndarray:
        """int64 [num_sessions]: clicks per session, in log order."""
        return np.diff(self.session_offsets)

    @property
    def item_click_counts(self) -> np.ndarray:
        """int64 [num_items]: clicks of items 1..N (one pass over the index)."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for start in range(0, self.num_clicks, _REORDER_CLICKS):
            counts += np.bincount(
                self.item_ids[start : start + _REORDER_CLICKS], minlength=self.num_items + 1
            )
        return counts[1:]

    @property
    def span_s(self) -> float:
        """Seconds from the log's earliest to its latest timestamp (0 without timestamps): a
        replay paced by the log lasts span_s / speedup."""
        return self.latest_s - self.earliest_s if self.timestamps_s is not None else 0.0

    @property
    def has_timestamps(self) -> bool:
        return self.timestamps_s is not None

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
        if self.timestamps_s is not None:
            offsets_s = np.array(self.timestamps_s[positions], dtype=np.float64)
            offsets_s -= self.earliest_s
        return SessionBatch(int(sessions[0]) + 1, lengths.astype(np.int32), item_ids, offsets_s, step)


def index_click_log(source: ReplaySource, folder: Path | None = None) -> ReplayIndex:
    """Reads `source` once and returns its index (files in a new folder under `folder`, by
    default the system's temporary folder). Raises ClickLogError saying what is wrong."""
    if not source.path:
        raise ClickLogError("no click log named (the path is empty)", field="path")
    if "://" in source.path:
        raise ClickLogError(
            f"{source.path}: only local paths are indexed (the workload service and the controller "
            "download gs://BUCKET/OBJECT first); other schemes are not read",
            field="path",
        )
    path = Path(source.path)
    try:
        if path.exists() and not path.is_file():
            raise ClickLogError(f"cannot read {path}: not a regular file", field="path")
    except OSError as error:  # a name too long, a permission denied on the way
        raise ClickLogError(f"cannot read {str(path)[:200]}: {error.strerror}", field="path") from error
    index_folder = Path(tempfile.mkdtemp(prefix="etude-replay-", dir=folder))
    try:
        return _build(path, source.columns, index_folder)
    except BaseException:
        shutil.rmtree(index_folder, ignore_errors=True)
        raise


class _LogOrderColumns:
    """The clicks in log order as the pass reads them: int32 session index, int32 item id and
    float64 timestamp, appended to three files a chunk at a time."""

    def __init__(self, folder: Path, timed: bool) -> None:
        self.folder = folder
        self.timed = timed
        self.sessions, self.items, self.times = array("i"), array("i"), array("d")
        self.num_clicks = 0
        self.earliest_s, self.latest_s = math.inf, -math.inf
        self.all_finite = True

    def flush(self) -> None:
        for name, column in (("sessions", self.sessions), ("items", self.items), ("times", self.times)):
            if name != "times" or self.timed:
                with (self.folder / name).open("ab") as out:
                    column.tofile(out)
        if self.timed and self.times:
            # No view of the buffer may outlive this (the buffer is cleared below).
            earliest_s = float(np.frombuffer(self.times, np.float64).min())
            latest_s = float(np.frombuffer(self.times, np.float64).max())
            # NaN is the min or max of a chunk that holds one; it must not be compared away.
            self.all_finite = self.all_finite and math.isfinite(earliest_s) and math.isfinite(latest_s)
            self.earliest_s = min(self.earliest_s, earliest_s)
            self.latest_s = max(self.latest_s, latest_s)
        self.num_clicks += len(self.sessions)
        for column in (self.sessions, self.items, self.times):
            del column[:]

    def read(self, name: str, dtype: type, start: int, count: int) -> np.ndarray:
        """Clicks start..start + count of one column, read into memory."""
        itemsize = np.dtype(dtype).itemsize
        return np.fromfile(self.folder / name, dtype=dtype, count=count, offset=start * itemsize)


class _Numbering(dict[str, int]):
    """Numbers keys by first appearance, from `first`; a lookup of a new key numbers it, so
    `map(numbering.__getitem__, keys)` numbers a whole column in C but for the new keys."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first = first

    def __missing__(self, key: str) -> int:
        number = self[key] = len(self) + self.first
        return number


def _build(path: Path, columns: ClickLogColumns, folder: Path) -> ReplayIndex:
    log_order = _LogOrderColumns(folder, columns.timestamp is not None)
    session_numbers, item_numbers = _Numbering(0), _Numbering(1)
    to_seconds: Callable[[str], float] | None = None
    for chunk in iter_click_chunks(path, columns):
        log_order.sessions.extend(map(session_numbers.__getitem__, chunk[0]))
        log_order.items.extend(map(item_numbers.__getitem__, chunk[1]))
        if log_order.timed:
            to_seconds = to_seconds or _timestamp_parser(chunk[2][0], path)
            try:
                log_order.times.extend(map(to_seconds, chunk[2]))
            except ValueError:
                raise _bad_timestamp(path, log_order, chunk[2], to_seconds) from None
        if len(log_order.sessions) >= _CHUNK_CLICKS:
            log_order.flush()
            if log_order.num_clicks > MAX_REPLAY_CLICKS:
                raise ClickLogError(f"{path} holds more than {MAX_REPLAY_CLICKS:,} clicks", field="path")
    log_order.flush()
    if log_order.num_clicks > MAX_REPLAY_CLICKS:
        raise ClickLogError(f"{path} holds more than {MAX_REPLAY_CLICKS:,} clicks", field="path")
    if not log_order.all_finite:
        raise ClickLogError(f"{path}: a timestamp is not a finite number", field="timestamp_column")
    num_sessions, num_items = len(session_numbers), len(item_numbers)
    del session_numbers, item_numbers
    return _order_by_session(path, log_order, num_sessions, num_items)


def _bad_timestamp(
    path: Path, log_order: _LogOrderColumns, timestamps: list[str], to_seconds: Callable[[str], float]
) -> ClickLogError:
    """Which click's timestamp did not parse like the first click's (the slow path, once)."""
    offset, bad = next(
        (offset, text) for offset, text in enumerate(timestamps) if not _parses(to_seconds, text)
    )
    # The chunk's sessions are appended already, its timestamps not (all) yet.
    click_number = log_order.num_clicks + len(log_order.sessions) - len(timestamps) + offset + 1
    return ClickLogError(
        f"{path}: click {click_number:,} has the timestamp {bad!r}, unlike the first click's",
        field="timestamp_column",
    )


def _parses(to_seconds: Callable[[str], float], text: str) -> bool:
    try:
        to_seconds(text)
    except ValueError:
        return False
    return True


def _order_by_session(
    path: Path, log_order: _LogOrderColumns, num_sessions: int, num_items: int
) -> ReplayIndex:
    """Places the clicks, stably, by session (= order of first click) into the index files,
    a chunk at a time: memory holds per-session counters and one chunk, never the whole log."""
    num_clicks = log_order.num_clicks
    lengths = np.zeros(num_sessions, dtype=np.int64)
    grouped, previous = True, -1
    for start in range(0, num_clicks, _REORDER_CLICKS):
        chunk = log_order.read("sessions", np.int32, start, _REORDER_CLICKS)
        lengths += np.bincount(chunk, minlength=num_sessions)
        grouped = grouped and int(chunk[0]) >= previous and bool(np.all(chunk[1:] >= chunk[:-1]))
        previous = int(chunk[-1])
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
    folder = log_order.folder
    names: list[tuple[str, type]] = [("items", np.int32)] + (
        [("times", np.float64)] if log_order.timed else []
    )
    if grouped:
        # A log already grouped by session (the usual case) is in order as it is.
        for name, _ in names:
            (folder / name).rename(folder / f"{name}.ordered")
    else:
        _place_by_session(log_order, session_offsets, names)
        for name, _ in names:
            (folder / name).unlink()
    (folder / "sessions").unlink()
    item_ids = np.memmap(folder / "items.ordered", dtype=np.int32, mode="r", shape=(num_clicks,))
    times_s = None
    if log_order.timed:
        times_s = np.memmap(folder / "times.ordered", dtype=np.float64, mode="r", shape=(num_clicks,))
    return ReplayIndex(
        folder, session_offsets, item_ids, times_s, log_order.earliest_s, log_order.latest_s, num_items
    )


def _place_by_session(
    log_order: _LogOrderColumns, session_offsets: np.ndarray, names: list[tuple[str, type]]
) -> None:
    """A counting sort, chunk by chunk: a click goes to its session's next free slot."""
    num_clicks = log_order.num_clicks
    next_slot = session_offsets[:-1].copy()
    targets = {
        name: np.memmap(log_order.folder / f"{name}.ordered", dtype=dtype, mode="w+", shape=(num_clicks,))
        for name, dtype in names
    }
    for start in range(0, num_clicks, _REORDER_CLICKS):
        sessions = log_order.read("sessions", np.int32, start, _REORDER_CLICKS)
        # Each click's rank among the clicks of its session in this chunk, in log order.
        order = np.argsort(sessions, kind="stable")
        sorted_sessions = sessions[order]
        group_first = np.flatnonzero(np.diff(sorted_sessions, prepend=-1))
        group_size = np.diff(group_first, append=sorted_sessions.size)
        rank = np.arange(sorted_sessions.size) - np.repeat(group_first, group_size)
        positions = np.empty(sorted_sessions.size, dtype=np.int64)
        positions[order] = next_slot[sorted_sessions] + rank
        next_slot[sorted_sessions[group_first]] += group_size
        for name, dtype in names:
            targets[name][positions] = log_order.read(name, dtype, start, _REORDER_CLICKS)
    for target in targets.values():
        target.flush()


def confined_to(source: ReplaySource, root: Path | None) -> ReplaySource:
    """`source` with its path inside `root` (a relative path is taken from `root`); None allows
    any path. Raises ClickLogError for a path that leaves the root (also through links)."""
    if root is None or not source.path or "://" in source.path:
        return source
    resolved_root = root.resolve()
    resolved = (resolved_root / source.path).resolve()
    if not resolved.is_relative_to(resolved_root):
        raise ClickLogError(
            f"{source.path} is outside the folder this workload service replays logs from "
            f"({resolved_root}, its --replay-root)",
            field="path",
        )
    return ReplaySource(str(resolved), source.columns)


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
