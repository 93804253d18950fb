"""A dynamic batcher: gathers single requests into batches for one model running off the loop.

A batch is formed when `max_batch_size` requests wait or when the oldest waiting request has
waited `max_batch_delay_ms` (Triton's max queue delay, which bounds every request's wait), and
runs in one dedicated executor thread so the next batch fills while the current one computes.
A batch holding a traced request gets a span of its own, linked to the requests it served.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from etude import defaults

_log = structlog.get_logger()

BATCH_SPAN = "inference.batch"

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

DEFAULT_MAX_BATCH_SIZE = defaults.MAX_BATCH_SIZE
DEFAULT_MAX_BATCH_DELAY_MS = defaults.MAX_BATCH_DELAY_MS
DEFAULT_MAX_QUEUE_SIZE = defaults.QUEUE_SIZE_PER_BATCH * defaults.MAX_BATCH_SIZE


class BatcherError(Exception):
    """Base of the batcher's refusals: the request never reached the model."""


class QueueFull(BatcherError):
    """The bounded queue holds `max_queue_size` waiting requests already."""


class DeadlineExpired(BatcherError):
    """The request's deadline passed before its batch was formed."""


class BatcherStopped(BatcherError):
    """The batcher is stopped (or stopping without draining) and takes no more requests."""


@dataclass(frozen=True, slots=True)
class Batched(Generic[ResultT]):
    """One request's result and where its time went, in nanoseconds."""

    result: ResultT
    # From the request's arrival until its batch started running in the model.
    queued_ns: int
    # Time the whole batch spent in the handler.
    model_ns: int
    batch_size: int
    # The batch's span, when a traced request was in it (for a link back from the request).
    batch_span_context: trace.SpanContext | None = None


@dataclass(slots=True)
class _Waiting(Generic[RequestT, ResultT]):
    request: RequestT
    future: asyncio.Future[Batched[ResultT]]
    arrival_ns: int
    deadline_ns: int | None
    span_context: trace.SpanContext | None


class DynamicBatcher(Generic[RequestT, ResultT]):
    """Batches requests for `handler`, a blocking callable mapping a batch to one result each.

    `handler(requests)` runs in a single dedicated thread and must return exactly one result
    per request, in order; if it raises, every request of that batch fails with its exception
    and the batcher carries on. Times are `time.monotonic_ns()`.

    A batch with at least one request submitted with a `span_context` runs inside an
    "inference.batch" span (a trace of its own, linked to those requests) carrying the batch
    size and whatever `batch_attributes(requests)` adds; the handler runs with it as the
    current span, so its log lines carry the batch's trace id. Other batches build no span.
    """

    def __init__(
        self,
        handler: Callable[[list[RequestT]], Sequence[ResultT]],
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        tracer: trace.Tracer | None = None,
        batch_attributes: Callable[[Sequence[RequestT]], Mapping[str, AttributeValue]] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_batch_delay_ms < 0:
            raise ValueError(f"max_batch_delay_ms must be >= 0, got {max_batch_delay_ms}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        self._handler = handler
        self._tracer = tracer if tracer is not None else trace.get_tracer(__name__)
        self._batch_attributes = batch_attributes
        self.max_batch_size = max_batch_size
        self.max_batch_delay_ms = max_batch_delay_ms
        self.max_queue_size = max_queue_size
        self._max_delay_ns = round(max_batch_delay_ms * 1e6)
        self._waiting: collections.deque[_Waiting[RequestT, ResultT]] = collections.deque()
        # Set when the loop has a reason to look again: first arrival, a full batch, stop.
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = False
        self._draining = False

    @property
    def queue_size(self) -> int:
        """Requests waiting for a batch (not counting the batch in the model)."""
        return len(self._waiting)

    async def start(self) -> None:
        """Starts the batching loop and its model thread."""
        if self._loop_task is not None:
            raise RuntimeError("batcher already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="etude-model")
        self._accepting = True
        self._loop_task = asyncio.create_task(self._run(), name="etude-batcher")

    async def stop(self, *, drain: bool = True) -> None:
        """Stops taking requests; finishes the waiting ones (`drain`) or fails them.

        Returns once the loop task has ended and the model thread is shut down.
        """
        self._accepting = False
        self._draining = drain
        if not drain:
            self._fail_all_waiting(BatcherStopped("the batcher stopped before this request ran"))
        self._wakeup.set()
        if self._loop_task is not None:
            try:
                await self._loop_task
            finally:
                self._loop_task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(
        self,
        request: RequestT,
        *,
        arrival_ns: int | None = None,
        deadline_ns: int | None = None,
        span_context: trace.SpanContext | None = None,
    ) -> Batched[ResultT]:
        """Queues `request` and waits for its batch's result.

        Raises QueueFull at once when `max_queue_size` requests already wait, DeadlineExpired
        when `deadline_ns` passes before its batch forms, BatcherStopped when not running.
        Cancelling the caller withdraws the request if its batch has not formed yet.
        `span_context`: the traced request's span, which its batch's span links to.
        """
        if not self._accepting:
            raise BatcherStopped("the batcher is not running")
        if len(self._waiting) >= self.max_queue_size:
            raise QueueFull(
                f"{len(self._waiting)} requests already wait (max_queue_size = {self.max_queue_size})"
            )
        future: asyncio.Future[Batched[ResultT]] = asyncio.get_running_loop().create_future()
        now_ns = time.monotonic_ns()
        self._waiting.append(
            _Waiting(request, future, now_ns if arrival_ns is None else arrival_ns, deadline_ns, span_context)
        )
        if len(self._waiting) == 1 or len(self._waiting) >= self.max_batch_size:
            self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._waiting:
                    if not self._accepting:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._wait_for_batch(loop)
                batch = self._take_batch()
                if batch:
                    await self._execute(loop, batch)
        finally:
            # Whatever ended the loop (stop, cancellation, a bug), no caller is left waiting.
            self._accepting = False
            self._fail_all_waiting(BatcherStopped("the batcher stopped before this request ran"))

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Returns when a batch is full, the oldest request's delay is up, or on stop."""
        # Measured from the oldest arrival, so time spent waiting for the model counts.
        flush_at_s = (
            loop.time() + (self._waiting[0].arrival_ns + self._max_delay_ns - time.monotonic_ns()) / 1e9
        )
        while self._accepting and len(self._waiting) < self.max_batch_size and loop.time() < flush_at_s:
            self._wakeup.clear()
            try:
                async with asyncio.timeout_at(flush_at_s):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Waiting[RequestT, ResultT]]:
        """Pops up to max_batch_size requests, failing expired ones and skipping withdrawn ones."""
        batch: list[_Waiting[RequestT, ResultT]] = []
        now_ns = time.monotonic_ns()
        while self._waiting and len(batch) < self.max_batch_size:
            waiting = self._waiting.popleft()
            if waiting.future.done():  # the caller was cancelled
                continue
            if waiting.deadline_ns is not None and waiting.deadline_ns <= now_ns:
                waited_ms = (now_ns - waiting.arrival_ns) / 1e6
                waiting.future.set_exception(
                    DeadlineExpired(f"deadline passed after {waited_ms:.3f} ms in the queue")
                )
                continue
            batch.append(waiting)
        return batch

    async def _execute(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting[RequestT, ResultT]]
    ) -> None:
        requests = [waiting.request for waiting in batch]
        start_ns = time.monotonic_ns()
        span = self._batch_span(batch, requests, start_ns)
        call: Callable[[], Sequence[ResultT]] = functools.partial(self._handler, requests)
        if span is not None:
            call = functools.partial(_call_in_span, span, call)
        try:
            results = await loop.run_in_executor(self._executor, call)
            if len(results) != len(requests):
                raise RuntimeError(
                    f"batch handler returned {len(results)} results for {len(requests)} requests"
                )
        except asyncio.CancelledError:
            _end_span(span, start_ns, "cancelled")
            _fail(batch, BatcherStopped("the batcher was cancelled while this request ran"))
            raise
        except Exception as error:
            _end_span(span, start_ns, repr(error))
            _log.warning("batch_failed", batch_size=len(batch), error=repr(error))
            _fail(batch, error)
            return
        model_ns = time.monotonic_ns() - start_ns
        span_context = None
        if span is not None:
            _end_span(span, start_ns, None, model_ns)
            span_context = span.get_span_context()
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(
                    Batched(result, start_ns - waiting.arrival_ns, model_ns, len(batch), span_context)
                )

    def _batch_span(
        self, batch: list[_Waiting[RequestT, ResultT]], requests: list[RequestT], start_ns: int
    ) -> trace.Span | None:
        """The batch's span when a traced request is in it; None (and nothing built) otherwise."""
        links = [trace.Link(waiting.span_context) for waiting in batch if waiting.span_context is not None]
        if not links:
            return None
        attributes: dict[str, AttributeValue] = {
            "etude.batch_size": len(batch),
            "etude.traced_requests": len(links),
        }
        if self._batch_attributes is not None:
            attributes.update(self._batch_attributes(requests))
        # Spans take wall-clock times; the batcher's clock is monotonic.
        span = self._tracer.start_span(
            BATCH_SPAN,
            context=otel_context.Context(),  # a root: the batch belongs to no single request
            kind=trace.SpanKind.INTERNAL,
            links=links,
            attributes=attributes,
            start_time=start_ns + _to_epoch_ns(),
        )
        return span

    def _fail_all_waiting(self, error: BatcherError) -> None:
        waiting = list(self._waiting)
        self._waiting.clear()
        _fail(waiting, error)


def _to_epoch_ns() -> int:
    return time.time_ns() - time.monotonic_ns()


def _call_in_span(span: trace.Span, call: Callable[[], Sequence[ResultT]]) -> Sequence[ResultT]:
    """Runs the handler (in the model thread) with the batch span current, for its log lines."""
    with trace.use_span(span, end_on_exit=False):
        return call()


def _end_span(span: trace.Span | None, start_ns: int, error: str | None, model_ns: int | None = None) -> None:
    if span is None:
        return
    if error is not None:
        span.set_status(trace.StatusCode.ERROR, error)
    end_ns = start_ns + model_ns if model_ns is not None else time.monotonic_ns()
    span.end(end_time=end_ns + _to_epoch_ns())


def _fail(batch: Sequence[_Waiting[RequestT, ResultT]], error: Exception) -> None:
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(error)
