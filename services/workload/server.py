"""gRPC shell of the workload generator: WorkloadService.StreamSessions.

Validation errors become INVALID_ARGUMENT naming the field; generation runs off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing

import grpc
import structlog

from etude import defaults
from etude.limits import WORKLOAD_SPEC_LIMITS, LimitExceeded, check_limits
from etude.v1 import workload_pb2, workload_pb2_grpc

from .generator import (
    InvalidWorkloadSpec,
    ItemPopularity,
    ScipyPowerLaw,
    SessionBatch,
    SessionGenerator,
    StreamRequest,
    SyntheticWorkload,
)

_log = structlog.get_logger()

# The click-count distribution is one of the two (the other is None).
_PopularityKey = tuple[int, float | None, ScipyPowerLaw | None, int]


class PopularityCache:
    """Popularity tables of recent workloads, so repeated and concurrent streams of one workload
    build the table (a second or two at 10 million items) once. Least recently used goes first."""

    def __init__(self, max_entries: int = defaults.POPULARITY_CACHE_SIZE) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._builds: OrderedDict[_PopularityKey, asyncio.Future[ItemPopularity]] = OrderedDict()

    async def get(self, workload: SyntheticWorkload) -> ItemPopularity:
        """The table of `workload`, built in a worker thread when it is not cached."""
        key = (workload.catalog_size, workload.alpha_clicks, workload.clicks_fit, workload.seed)
        build = self._builds.get(key)
        if build is None:
            build = asyncio.ensure_future(asyncio.to_thread(_build_popularity, workload))
            build.add_done_callback(lambda done: self._forget_if_failed(key, done))
            if self.max_entries:
                self._builds[key] = build
                while len(self._builds) > self.max_entries:
                    self._builds.popitem(last=False)
        else:
            self._builds.move_to_end(key)
        # Shielded: a caller that goes away must not cancel a build others wait for.
        return await asyncio.shield(build)

    def _forget_if_failed(self, key: _PopularityKey, build: asyncio.Future[ItemPopularity]) -> None:
        # Reading the exception also keeps asyncio from warning about an unretrieved one when
        # every caller has gone; a failed build (MemoryError) is retried by the next call.
        failed = build.cancelled() or build.exception() is not None
        if failed and self._builds.get(key) is build:
            del self._builds[key]


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

    def __init__(self, popularity_cache: PopularityCache | None = None) -> None:
        self._popularity = PopularityCache() if popularity_cache is None else popularity_cache

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
        except MemoryError:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"not enough memory for catalog_size {request.catalog_size:,}",
            )

    async def _stream(
        self, request: workload_pb2.WorkloadSpec
    ) -> AsyncGenerator[workload_pb2.SessionBatch, None]:
        stream = StreamRequest.from_proto(request)
        # The core checks what makes a spec meaningful; the limits what keeps it affordable.
        check_limits(request, WORKLOAD_SPEC_LIMITS)
        log = _log.bind(
            catalog_size=stream.workload.catalog_size,
            statistics=stream.workload.describe(),
            seed=stream.workload.seed,
            total_clicks=stream.total_clicks,
        )
        log.info("stream_started")
        popularity = await self._popularity.get(stream.workload)
        generator = SessionGenerator(stream.workload, popularity)
        batches = generator.batches(stream.sessions_per_batch, stream.total_clicks)
        sent_clicks = sent_sessions = 0
        # One batch is generated ahead, in a worker thread, while the previous one is sent.
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
