"""gRPC shell of the workload generator and the log replay: WorkloadService.StreamSessions.

Validation errors become INVALID_ARGUMENT naming the field; generation, indexing and file reads
run off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Generic, TypeVar

import grpc
import structlog

from etude import defaults
from etude.limits import WORKLOAD_SPEC_LIMITS, LimitExceeded, check_limits
from etude.v1 import workload_pb2, workload_pb2_grpc

from .fit import ClickLogColumns, ClickLogError
from .gcs_log import local_click_log
from .generator import (
    InvalidWorkloadSpec,
    ItemPopularity,
    ScipyPowerLaw,
    SessionBatch,
    SessionGenerator,
    StreamRequest,
    SyntheticWorkload,
)
from .replay import ReplayIndex, ReplayRequest, ReplaySource, confined_to, index_click_log

_log = structlog.get_logger()

# The click-count distribution is one of the two (the other is None).
_PopularityKey = tuple[int, float | None, ScipyPowerLaw | None, int]
Key = TypeVar("Key", bound=Hashable)
Built = TypeVar("Built")


class BuildCache(Generic[Key, Built]):
    """Things that take seconds to build (popularity tables, replay indexes), kept for the most
    recent keys so repeated and concurrent streams build each once. Least recently used goes
    first; a failed build is forgotten, so the next call retries it."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._builds: OrderedDict[Key, asyncio.Future[Built]] = OrderedDict()

    async def get_or_build(self, key: Key, build: Callable[[], Built]) -> Built:
        """The value of `key`, built by `build` in a worker thread when it is not cached."""
        future = self._builds.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(build))
            future.add_done_callback(lambda done: self._forget_if_failed(key, done))
            if self.max_entries:
                self._builds[key] = future
                while len(self._builds) > self.max_entries:
                    self._builds.popitem(last=False)
        else:
            self._builds.move_to_end(key)
        # Shielded: a caller that goes away must not cancel a build others wait for.
        return await asyncio.shield(future)

    def _forget_if_failed(self, key: Key, build: asyncio.Future[Built]) -> None:
        # Reading the exception also keeps asyncio from warning about an unretrieved one when
        # every caller has gone; a failed build (MemoryError) is retried by the next call.
        failed = build.cancelled() or build.exception() is not None
        if failed and self._builds.get(key) is build:
            del self._builds[key]


class PopularityCache(BuildCache[_PopularityKey, ItemPopularity]):
    """Popularity tables of recent workloads (a second or two to build at 10 million items)."""

    def __init__(self, max_entries: int = defaults.POPULARITY_CACHE_SIZE) -> None:
        super().__init__(max_entries)

    async def get(self, workload: SyntheticWorkload) -> ItemPopularity:
        """The table of `workload`, built in a worker thread when it is not cached."""
        key = (workload.catalog_size, workload.alpha_clicks, workload.clicks_fit, workload.seed)
        return await self.get_or_build(key, lambda: _build_popularity(workload))


# The log's path, its modification time and size (a rewritten log is indexed anew), the columns.
_ReplayKey = tuple[str, int, int, ClickLogColumns]


class ReplayIndexCache(BuildCache[_ReplayKey, ReplayIndex]):
    """Indexes of recently replayed logs: the parts of one log that several loadgens stream
    at once share one index. An evicted index's files go when its last stream ends."""

    def __init__(self, max_entries: int = defaults.REPLAY_CACHE_SIZE) -> None:
        super().__init__(max_entries)

    async def get(self, source: ReplaySource) -> ReplayIndex:
        """The index of `source`, built in a worker thread when it is not cached (or changed)."""
        try:
            path, stat = await asyncio.to_thread(_resolved_stat, source.path)
        except OSError:
            # Not cached: index_click_log says precisely why the log cannot be read.
            return await asyncio.to_thread(index_click_log, source)
        key = (path, stat.st_mtime_ns, stat.st_size, source.columns)
        return await self.get_or_build(key, lambda: _build_replay_index(source))


def _resolved_stat(path: str) -> tuple[str, os.stat_result]:
    resolved = Path(path).resolve()
    return str(resolved), resolved.stat()


def _build_replay_index(source: ReplaySource) -> ReplayIndex:
    started = time.perf_counter()
    index = index_click_log(source)
    _log.info(
        "replay_indexed",
        path=str(source.path),
        clicks=index.num_clicks,
        sessions=index.num_sessions,
        items=index.num_items,
        timestamps=index.has_timestamps,
        seconds=round(time.perf_counter() - started, 3),
    )
    return index


def _build_popularity(workload: SyntheticWorkload) -> ItemPopularity:
    started = time.perf_counter()
    popularity = ItemPopularity.for_workload(workload)
    _log.info(
        "popularity_built",
        catalog_size=workload.catalog_size,
        statistics=workload.describe(),
        seed=workload.seed,
        distinct_click_counts=popularity.num_distinct_counts,
        seconds=round(time.perf_counter() - started, 3),
    )
    return popularity


def _next_message(batches: Iterator[SessionBatch]) -> workload_pb2.SessionBatch | None:
    batch = next(batches, None)
    return None if batch is None else batch.to_proto()


class WorkloadServicer(workload_pb2_grpc.WorkloadServiceServicer):
    """Streams the sessions of a WorkloadSpec, one SessionBatch message per batch."""

    def __init__(
        self,
        popularity_cache: PopularityCache | None = None,
        replay_cache: ReplayIndexCache | None = None,
        replay_root: Path | None = None,
        log_cache_dir: Path | None = None,
    ) -> None:
        """`replay_root`: the folder replayed logs must be in (None: any path the process reads);
        `log_cache_dir`: where logs replayed from gs:// are downloaded (None: a folder under the
        system's temporary folder)."""
        self._popularity = PopularityCache() if popularity_cache is None else popularity_cache
        self._replays = ReplayIndexCache() if replay_cache is None else replay_cache
        self._replay_root = replay_root
        self._log_cache_dir = log_cache_dir or Path(tempfile.gettempdir()) / "etude-replay-logs"

    async def StreamSessions(
        self, request: workload_pb2.WorkloadSpec, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[workload_pb2.SessionBatch]:
        # The one place where the core's errors become status codes.
        try:
            async with aclosing(self._stream(request)) as messages:
                async for message in messages:
                    yield message
        except (InvalidWorkloadSpec, LimitExceeded) as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ClickLogError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"replay.{error.field}: {error}")
        except MemoryError:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"not enough memory for catalog_size {request.catalog_size:,}",
            )

    async def _stream(
        self, request: workload_pb2.WorkloadSpec
    ) -> AsyncGenerator[workload_pb2.SessionBatch, None]:
        if request.HasField("replay"):
            batches, log = await self._replay_batches(request)
        else:
            batches, log = await self._synthetic_batches(request)
        log.info("stream_started")
        sent_clicks = sent_sessions = 0
        # One batch is made ahead, in a worker thread, while the previous one is sent.
        pending = asyncio.ensure_future(asyncio.to_thread(_next_message, batches))
        try:
            while (message := await pending) is not None:
                pending = asyncio.ensure_future(asyncio.to_thread(_next_message, batches))
                yield message
                sent_clicks += len(message.item_ids)
                sent_sessions += len(message.session_lengths)
        finally:
            pending.cancel()
            log.info("stream_ended", clicks=sent_clicks, sessions=sent_sessions)

    async def _synthetic_batches(
        self, request: workload_pb2.WorkloadSpec
    ) -> tuple[Iterator[SessionBatch], structlog.typing.FilteringBoundLogger]:
        stream = StreamRequest.from_proto(request)
        # The core checks what makes a spec meaningful; the limits what keeps it affordable.
        check_limits(request, WORKLOAD_SPEC_LIMITS)
        log = _log.bind(
            catalog_size=stream.workload.catalog_size,
            statistics=stream.workload.describe(),
            seed=stream.workload.seed,
            total_clicks=stream.total_clicks,
        )
        popularity = await self._popularity.get(stream.workload)
        generator = SessionGenerator(stream.workload, popularity)
        return generator.batches(stream.sessions_per_batch, stream.total_clicks), log

    async def _replay_batches(
        self, request: workload_pb2.WorkloadSpec
    ) -> tuple[Iterator[SessionBatch], structlog.typing.FilteringBoundLogger]:
        replay = ReplayRequest.from_proto(request)
        check_limits(request, WORKLOAD_SPEC_LIMITS)
        source = await asyncio.to_thread(confined_to, replay.source, self._replay_root)
        # A log in Cloud Storage is downloaded (once per object generation) and indexed locally.
        source = await asyncio.to_thread(local_click_log, source, self._log_cache_dir)
        index = await self._replays.get(source)
        # Refuses a catalog below the log's N before the first batch.
        batches = replay.batches(index)
        log = _log.bind(
            catalog_size=replay.catalog_size,
            replay=str(replay.source.path),
            session_partition=f"{replay.partition} of {replay.partition_count}",
            total_clicks=replay.total_clicks,
        )
        return batches, log
