"""A dynamic batcher: gathers single requests into batches for one model running off the loop.

A batch is formed when `max_batch_size` requests wait or when the oldest waiting request has
waited `max_batch_delay_ms` (Triton's max queue delay, which bounds every request's wait), and
runs on whichever of its executors (one dedicated thread each) is free, so the next batch fills
while the current ones compute. Admission is by deadline: from what batches have cost so far
(cost_model.py) it refuses at arrival a request that would finish after its deadline, drops a
queued one that no longer can, and cuts a batch at the size its most urgent member can afford.
A batch holding a traced request gets a span of its own, linked to the requests it served.
Over 500 lines because queueing, admission, batch cutting and dispatch to the executors share
one queue and one clock: split, each part would reach into the others' state (the cost model
and the queue plan already live in cost_model.py and admission.py).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from etude import defaults

from .admission import BatchPlan, Forecast, earliest
from .cost_model import BatchCostModel
from .model_thread import ModelThread, Outcome, run_inline

_log = structlog.get_logger()

BATCH_SPAN = "inference.batch"

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

DEFAULT_MAX_BATCH_SIZE = defaults.MAX_BATCH_SIZE
DEFAULT_MAX_BATCH_DELAY_MS = defaults.MAX_BATCH_DELAY_MS
DEFAULT_MAX_QUEUE_SIZE = defaults.QUEUE_SIZE_PER_BATCH * defaults.MAX_BATCH_SIZE
DEFAULT_MAX_QUEUE_BYTES = defaults.MAX_QUEUE_BYTES
DEFAULT_INLINE_BELOW_US = defaults.INLINE_BATCH_BELOW_US
# A batch runs inline only if its run time (not only its CPU time) is within this many times the
# threshold: its time on a busy machine includes GIL waits, but a device wait would block the loop.
INLINE_RUN_TIME_FACTOR = 10
# Admission and batch forming keep this fraction of a request's expected model time in reserve:
# the estimates are means, and the answer still has to travel back before the deadline.
DEADLINE_HEADROOM = 0.1


class BatcherError(Exception):
    """Base of the batcher's refusals: the request never reached the model."""


class QueueFull(BatcherError):
    """The bounded queue holds `max_queue_size` waiting requests already."""


class QueueBytesFull(QueueFull):
    """The waiting requests hold `max_queue_bytes` already, or would with this one."""


class QueueWaitTooLong(QueueFull):
    """The work queued ahead would keep the request waiting longer than `max_queue_wait_ms`."""


class WouldMissDeadline(BatcherError):
    """Refused at arrival: by the batches' measured cost it would finish after its deadline."""


class DeadlineExpired(BatcherError):
    """The request's deadline passed (or could no longer be met) before its batch ran."""


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
    size_bytes: int


@dataclass(slots=True)
class _Executor(Generic[RequestT, ResultT]):
    """One model thread and the batch it runs, if any."""

    index: int
    thread: ModelThread[Sequence[ResultT]]
    batch: list[_Waiting[RequestT, ResultT]] | None = None
    # When its running batch should end, by the cost model (monotonic ns).
    busy_until_ns: int = 0

    @property
    def busy(self) -> bool:
        return self.batch is not None


class DynamicBatcher(Generic[RequestT, ResultT]):
    """Batches requests for `handler`, a blocking callable mapping a batch to one result each.

    `handler(requests)` runs in one of `executors` dedicated threads, each batch on whichever is
    free (`executor_initializer(index)` runs once in each, e.g. to give it its own CUDA stream
    or thread count), and must return exactly one result per request, in order; if it raises,
    every request of that batch fails with its exception and the batcher carries on. A batch of
    a size measured to take less than `inline_below_us` (less than the hand-off to a thread and
    back costs) runs on the loop instead. Times are `time.monotonic_ns()`.

    Admission: a request with a deadline is refused at once (WouldMissDeadline) when the work
    queued ahead of it, spread over the executors, plus its own batch would end after the
    deadline (with DEADLINE_HEADROOM in reserve); `max_queue_wait_ms` (0: off) bounds the
    expected wait of every request (QueueWaitTooLong); `max_queue_size` bounds the count
    (QueueFull) and `max_queue_bytes` the bytes the waiting requests hold, as their callers
    size them (QueueBytesFull). Estimates come from `cost_model`, which learns from every batch run.

    A batch with at least one request submitted with a `span_context` runs inside an
    "inference.batch" span (a trace of its own, linked to those requests) carrying the batch
    size and whatever `batch_attributes(requests)` adds; the handler runs with it as the
    current span, so its log lines carry the batch's trace id. Other batches build no span.

    `on_batch(executor_index, batch_size, model_ns)` runs on the loop for every batch that left
    the model, failed ones included (the service's metrics).
    """

    def __init__(
        self,
        handler: Callable[[list[RequestT]], Sequence[ResultT]],
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_queue_wait_ms: float = 0.0,
        inline_below_us: float = DEFAULT_INLINE_BELOW_US,
        executors: int = 1,
        executor_initializer: Callable[[int], None] | None = None,
        cost_model: BatchCostModel | None = None,
        tracer: trace.Tracer | None = None,
        batch_attributes: Callable[[Sequence[RequestT]], Mapping[str, AttributeValue]] | None = None,
        on_batch: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_batch_delay_ms < 0:
            raise ValueError(f"max_batch_delay_ms must be >= 0, got {max_batch_delay_ms}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        if max_queue_bytes < 1:
            raise ValueError(f"max_queue_bytes must be >= 1, got {max_queue_bytes}")
        if inline_below_us < 0:
            raise ValueError(f"inline_below_us must be >= 0 (0 = never inline), got {inline_below_us}")
        if max_queue_wait_ms < 0:
            raise ValueError(f"max_queue_wait_ms must be >= 0 (0 = no bound), got {max_queue_wait_ms}")
        if executors < 1:
            raise ValueError(f"executors must be >= 1, got {executors}")
        self._handler = handler
        self._tracer = tracer if tracer is not None else trace.get_tracer(__name__)
        self._batch_attributes = batch_attributes
        self._on_batch = on_batch
        self.max_batch_size = max_batch_size
        self.max_batch_delay_ms = max_batch_delay_ms
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        # Bytes held by the requests in `_waiting` (their size_bytes).
        self._queued_bytes = 0
        self.max_queue_wait_ms = max_queue_wait_ms
        self.inline_below_us = inline_below_us
        self._inline_below_ns = inline_below_us * 1e3
        self.executors = executors
        self.cost_model = cost_model if cost_model is not None else BatchCostModel()
        self._executor_initializer = executor_initializer
        self._max_delay_ns = round(max_batch_delay_ms * 1e6)
        self._max_wait_ns = round(max_queue_wait_ms * 1e6)
        self._waiting: collections.deque[_Waiting[RequestT, ResultT]] = collections.deque()
        # The same queue seen as the batches it should run in (for admission).
        self._plan = BatchPlan(self.cost_model, max_batch_size, DEADLINE_HEADROOM)
        # Set when the loop has a reason to look again: an arrival, a free executor, stop.
        self._wakeup = asyncio.Event()
        self._executors: list[_Executor[RequestT, ResultT]] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = False
        self._dispatch_scheduled = False

    @property
    def queue_size(self) -> int:
        """Requests waiting for a batch (not counting the batches in the model)."""
        return len(self._waiting)

    async def start(self) -> None:
        """Starts the batching loop and its model threads."""
        if self._loop_task is not None:
            raise RuntimeError("batcher already started")
        initializer = self._executor_initializer
        self._executors = [
            _Executor(
                index,
                ModelThread(
                    f"etude-model-{index}",
                    functools.partial(initializer, index) if initializer is not None else None,
                ),
            )
            for index in range(self.executors)
        ]
        self._accepting = True
        self._loop_task = asyncio.create_task(self._run(), name="etude-batcher")

    async def stop(self, *, drain: bool = True) -> None:
        """Stops taking requests; finishes the waiting ones (`drain`) or fails them.

        Returns once the loop task and the batches in the model have ended and the model
        threads are shut down.
        """
        self._accepting = False
        if not drain:
            self._fail_all_waiting(BatcherStopped("the batcher stopped before this request ran"))
        self._wakeup.set()
        if self._loop_task is not None:
            try:
                await self._loop_task
            finally:
                self._loop_task = None
        # Off the loop: a batch the loop was cancelled under may still be running.
        await asyncio.gather(*(asyncio.to_thread(executor.thread.stop) for executor in self._executors))
        self._executors = []

    async def submit(
        self,
        request: RequestT,
        *,
        arrival_ns: int | None = None,
        deadline_ns: int | None = None,
        span_context: trace.SpanContext | None = None,
        size_bytes: int = 0,
    ) -> Batched[ResultT]:
        """Queues `request` and waits for its batch's result.

        Raises at once QueueFull when `max_queue_size` requests already wait, QueueBytesFull
        when the waiting requests' bytes plus its `size_bytes` pass `max_queue_bytes`, WouldMissDeadline
        when it would finish after `deadline_ns`, QueueWaitTooLong when its expected wait exceeds
        `max_queue_wait_ms`; DeadlineExpired when, queued, it can no longer make `deadline_ns`;
        BatcherStopped when not running. Cancelling the caller withdraws the request if its batch
        has not formed yet. `span_context`: the traced request's span, which its batch's span
        links to.
        """
        if not self._accepting:
            raise BatcherStopped("the batcher is not running")
        if len(self._waiting) >= self.max_queue_size:
            raise QueueFull(
                f"{len(self._waiting)} requests already wait (max_queue_size = {self.max_queue_size})"
            )
        if self._queued_bytes + size_bytes > self.max_queue_bytes:
            raise QueueBytesFull(
                f"the {len(self._waiting)} waiting requests hold {self._queued_bytes:,} bytes; this one's "
                f"{size_bytes:,} would pass max_queue_bytes = {self.max_queue_bytes:,}"
            )
        now_ns = time.monotonic_ns()
        forecast = self._admit(now_ns, deadline_ns)
        future: asyncio.Future[Batched[ResultT]] = asyncio.get_running_loop().create_future()
        self._plan.add(forecast, deadline_ns)
        self._waiting.append(
            _Waiting(
                request,
                future,
                now_ns if arrival_ns is None else arrival_ns,
                deadline_ns,
                span_context,
                size_bytes,
            )
        )
        self._queued_bytes += size_bytes
        if len(self._waiting) >= self.max_batch_size or self._max_delay_ns == 0:
            # Due now: dispatched by a plain callback once this loop iteration's arrivals are in,
            # which costs less than waking the loop task.
            self._schedule_dispatch()
        elif len(self._waiting) == 1:
            self._wakeup.set()
        return await future

    def forecast(self, now_ns: int, deadline_ns: int | None = None) -> Forecast:
        """Where a request arriving now with `deadline_ns` would run, by the cost model."""
        free_at = [float(max(now_ns, e.busy_until_ns)) if e.busy else float(now_ns) for e in self._executors]
        return self._plan.forecast(free_at or [float(now_ns)], deadline_ns)

    def _admit(self, now_ns: int, deadline_ns: int | None) -> Forecast:
        """Where the request will run; raises if it would finish too late or wait too long."""
        forecast = self.forecast(now_ns, deadline_ns)
        finish_in_ns = forecast.finish_ns - now_ns

        def situation() -> str:
            busy = sum(executor.busy for executor in self._executors)
            return (
                f"{len(self._waiting)} requests queued ahead, {busy} of {self.executors} executors busy, "
                f"its batch of {forecast.batch_size} takes ~{forecast.cost_ns / 1e6:.1f} ms"
            )

        if deadline_ns is not None and now_ns + finish_in_ns * (1 + DEADLINE_HEADROOM) > deadline_ns:
            raise WouldMissDeadline(
                f"would finish in ~{finish_in_ns / 1e6:.1f} ms, deadline in "
                f"{(deadline_ns - now_ns) / 1e6:.1f} ms ({situation()})"
            )
        wait_ns = forecast.start_ns - now_ns
        if self._max_wait_ns and wait_ns > self._max_wait_ns:
            raise QueueWaitTooLong(
                f"would wait ~{wait_ns / 1e6:.1f} ms, more than max_queue_wait_ms = "
                f"{self.max_queue_wait_ms:g} ({situation()})"
            )
        return forecast

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
                if self._free_executor() is None:
                    # Every executor runs a batch: the queue keeps filling until one is free.
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._wait_for_batch(loop)
                executor = self._free_executor()  # submit or _finish may have used it meanwhile
                if executor is not None:
                    batch = self._take_batch()
                    if batch:
                        self._dispatch(loop, executor, batch)
        finally:
            # Whatever ended the loop (stop, cancellation, a bug), no caller is left waiting.
            self._accepting = False
            self._fail_all_waiting(BatcherStopped("the batcher stopped before this request ran"))
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # The model threads cannot be interrupted: their callers are answered now.
                stopped = BatcherStopped("the batcher was cancelled while this request ran")
                for executor in self._executors:
                    if executor.batch is not None:
                        _fail(executor.batch, stopped)
            else:
                while any(executor.busy for executor in self._executors):
                    self._wakeup.clear()
                    await self._wakeup.wait()

    def _free_executor(self) -> _Executor[RequestT, ResultT] | None:
        return next((executor for executor in self._executors if not executor.busy), None)

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch_if_ready)

    def _dispatch_if_ready(self) -> None:
        """Dispatches the batches that are due (full, or their oldest request's delay is up) to
        free executors; whatever is left is the loop task's."""
        self._dispatch_scheduled = False
        while self._dispatch_one_if_ready():
            pass
        if self._waiting and self._free_executor() is not None:
            self._wakeup.set()  # not due yet: the loop task keeps the time

    def _dispatch_one_if_ready(self) -> bool:
        if not self._waiting or not self._accepting:
            return False
        if (
            len(self._waiting) < self.max_batch_size
            and self._waiting[0].arrival_ns + self._max_delay_ns > time.monotonic_ns()
        ):
            return False
        executor = self._free_executor()
        if executor is None:
            return False
        batch = self._take_batch()
        if batch:
            self._dispatch(asyncio.get_running_loop(), executor, batch)
        return True

    def _dispatch(
        self,
        loop: asyncio.AbstractEventLoop,
        executor: _Executor[RequestT, ResultT],
        batch: list[_Waiting[RequestT, ResultT]],
    ) -> None:
        """Hands `batch` to `executor`'s thread; `_finish` answers its requests on the loop."""
        dispatched_ns = time.monotonic_ns()
        executor.batch = batch
        executor.busy_until_ns = dispatched_ns + round(self.cost_model.estimate_ns(len(batch)))
        requests = [waiting.request for waiting in batch]
        span = self._batch_span(batch, requests, dispatched_ns)
        call: Callable[[], Sequence[ResultT]] = functools.partial(self._handler, requests)
        if span is not None:
            call = functools.partial(_call_in_span, span, call)
        if self._cheaper_than_a_hand_off(len(batch)):
            self._finish(executor, batch, span, run_inline(call))
            return
        executor.thread.submit(call, loop, functools.partial(self._finish, executor, batch, span))

    def _cheaper_than_a_hand_off(self, batch_size: int) -> bool:
        """Whether batches of this size were measured to use less CPU than `inline_below_us`.

        CPU time, because a model thread's run time includes its waits for the GIL; the run
        time must stay small too (a batch that waits on a device would block the loop).
        """
        cpu_ns = self.cost_model.cpu_estimate_ns(batch_size)
        return (
            cpu_ns is not None
            and cpu_ns < self._inline_below_ns
            and self.cost_model.estimate_ns(batch_size) < INLINE_RUN_TIME_FACTOR * self._inline_below_ns
        )

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
        """Pops the next batch: skips withdrawn requests, fails those that can no longer make
        their deadline, and cuts the batch where its estimated cost would overrun the earliest
        deadline in it (the rest wait for the next batch)."""
        batch: list[_Waiting[RequestT, ResultT]] = []
        now_ns = time.monotonic_ns()
        affordable = self._plan.affordable
        earliest_deadline_ns: int | None = None
        while self._waiting and len(batch) < self.max_batch_size:
            waiting = self._waiting[0]
            if waiting.future.done():  # the caller was cancelled
                self._pop_waiting()
                continue
            deadline_ns = waiting.deadline_ns
            if not affordable(now_ns, 1, deadline_ns):
                self._pop_waiting()
                waiting.future.set_exception(DeadlineExpired(self._too_late(waiting, now_ns)))
                continue
            candidate_deadline_ns = earliest(earliest_deadline_ns, deadline_ns)
            if batch and not affordable(now_ns, len(batch) + 1, candidate_deadline_ns):
                break  # one more would make the batch too slow for its most urgent member
            self._pop_waiting()
            batch.append(waiting)
            earliest_deadline_ns = candidate_deadline_ns
        return batch

    def _too_late(self, waiting: _Waiting[RequestT, ResultT], now_ns: int) -> str:
        waited_ms = (now_ns - waiting.arrival_ns) / 1e6
        assert waiting.deadline_ns is not None
        if waiting.deadline_ns <= now_ns:
            return f"deadline passed after {waited_ms:.3f} ms in the queue"
        return (
            f"deadline in {(waiting.deadline_ns - now_ns) / 1e6:.1f} ms, less than a batch of 1 takes "
            f"(~{self.cost_model.estimate_ns(1) / 1e6:.1f} ms + {DEADLINE_HEADROOM:.0%}), "
            f"after {waited_ms:.3f} ms in the queue"
        )

    def _finish(
        self,
        executor: _Executor[RequestT, ResultT],
        batch: list[_Waiting[RequestT, ResultT]],
        span: trace.Span | None,
        outcome: Outcome[Sequence[ResultT]],
    ) -> None:
        """Runs on the loop when `batch` left the model: answers its requests, frees the executor."""
        executor.batch = None
        if self._waiting and not self._dispatch_scheduled:
            self._schedule_dispatch()
        elif not self._accepting:
            self._wakeup.set()  # the stopping loop waits for the last batch to end
        if self._on_batch is not None:
            self._on_batch(executor.index, len(batch), outcome.ended_ns - outcome.started_ns)
        results, error = outcome.result, outcome.error
        if error is None and (results is None or len(results) != len(batch)):
            count = "no" if results is None else len(results)
            error = RuntimeError(f"batch handler returned {count} results for {len(batch)} requests")
        if error is not None:
            _end_span(span, outcome.ended_ns, repr(error))
            _log.warning("batch_failed", batch_size=len(batch), error=repr(error))
            _fail(batch, error if isinstance(error, Exception) else BatcherStopped(repr(error)))
            return
        assert results is not None
        model_ns = outcome.ended_ns - outcome.started_ns
        self.cost_model.observe(len(batch), model_ns, outcome.cpu_ns)
        span_context = None
        if span is not None:
            _end_span(span, outcome.ended_ns, None)
            span_context = span.get_span_context()
        started_ns = outcome.started_ns
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(
                    Batched(result, started_ns - waiting.arrival_ns, model_ns, len(batch), span_context)
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

    def _pop_waiting(self) -> None:
        self._queued_bytes -= self._waiting.popleft().size_bytes
        self._plan.remove_first()

    def _fail_all_waiting(self, error: BatcherError) -> None:
        waiting = list(self._waiting)
        self._waiting.clear()
        self._queued_bytes = 0
        self._plan.clear()
        _fail(waiting, error)


def _to_epoch_ns() -> int:
    return time.time_ns() - time.monotonic_ns()


def _call_in_span(span: trace.Span, call: Callable[[], Sequence[ResultT]]) -> Sequence[ResultT]:
    """Runs the handler (in the model thread) with the batch span current, for its log lines."""
    with trace.use_span(span, end_on_exit=False):
        return call()


def _end_span(span: trace.Span | None, end_ns: int, error: str | None) -> None:
    if span is None:
        return
    if error is not None:
        span.set_status(trace.StatusCode.ERROR, error)
    span.end(end_time=end_ns + _to_epoch_ns())


def _fail(batch: Sequence[_Waiting[RequestT, ResultT]], error: Exception) -> None:
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(error)
