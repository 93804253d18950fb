"""The backpressure-aware load generator (Algorithm 2 of the ETUDE paper), free of gRPC and models.

It replays sessions click by click through a `RecommendClient`, one-second tick after tick of
the ramp. Each request has an intended send time fixed by the schedule (the tick's requests
evenly spread over the tick, ticks anchored to the start of the run); whatever is overdue is
sent at once, so a late event loop or backpressure shows up as latency from the intended send
time instead of silently thinning the load (wrk2's coordinated-omission correction).

One scheduler task sends every request: a `CallbackRecommendClient` hands each request to the
transport and calls back when it ends, so no asyncio task is created per request (an async
`RecommendClient` gets one task per request through an adapter). Latencies are fed to the
histograms in one batch per tick. The generator measures its own footprint (CPU per request,
send lateness) and reports it in every summary.

Over 500 lines because the schedule, backpressure, per-session order, recording and the
summary act on one run's state tick by tick; the parts that stand alone (ramp, stats, footprint,
the clients) are modules of their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import time
from array import array
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

import numpy as np
import structlog
from google.protobuf import json_format

from etude import defaults
from etude.limits import MAX_LOG_SPEEDUP
from etude.v1 import loadgen_pb2

from ..results.records import CANCELLED, CLIENT_ERROR, OK, Record
from ..results.run import RunWriter
from ..results.series import SeriesRow
from . import spec as load_spec
from .candidates import CandidateSampler
from .footprint import loadgen_footprint
from .gc_freeze import collect_young, objects_frozen
from .metrics import RunTotals
from .precise_sleep import PreciseSleeper
from .ramp import Tick, ramp_ticks
from .session_buffer import SessionBuffer
from .stats import LatencyHistogram, record_columns_us

_log = structlog.get_logger()

TICK_NS = 1_000_000_000
# Latencies go into the histograms in batches of this many answers (and at each tick's end):
# a whole tick's at once (8,000 at 8,000 req/s) held the loop for milliseconds, sends included.
LATENCY_BATCH = 256
# What each OK answer adds to the batch: its latencies from intended and from actual, the server's
# queue and inference, and the network and overhead.
LATENCY_COLUMNS = 5
# Records go to the writer thread every this many answers (and at each tick's end): a whole
# tick's at once had the writer, on the loop's core, take the GIL for milliseconds.
ROWS_PER_WRITE = 256
# Backpressure and "no session ready" are re-checked at this step (Algorithm 2, line 12).
WAIT_STEP_S = 0.001
# After the last tick, in-flight requests get their timeout plus this before being cancelled.
DRAIN_SLACK_S = 1.0
# How long cancelled requests get to report back before the summary is written without them.
CANCEL_WAIT_S = 5.0
# A request carries at most this many of its session's latest clicks (what the inference service
# accepts): a replayed session longer than that is still sent click by click, whole; the models
# read only the last 50 clicks anyway.
MAX_REQUEST_ITEMS = defaults.MAX_REQUEST_ITEMS

# A request's status (OK, CANCELLED, CLIENT_ERROR or a gRPC code name) is spelled in results/records.py.

# The intended send time (time.perf_counter_ns()) of the request a client is sending, set in the
# request's own task: a tracing client starts its span there (coordinated omission, in traces).
INTENDED_SEND_NS: contextvars.ContextVar[int] = contextvars.ContextVar("etude_intended_send_ns")


class Outcome(NamedTuple):
    """How one request ended: a gRPC status name and, when OK, the server's timing split."""

    status: str
    queue_us: int = 0
    inference_us: int = 0
    batch_size: int = 0
    server_total_us: int = 0
    # A router's calls to its catalog shards (ServerTiming.shard_*; 0 unsharded).
    shard_fanout_us: int = 0
    shard_compute_us: int = 0
    shard_wire_bytes: int = 0
    # When the transport wrote the request and read its answer (time.perf_counter_ns()), where
    # it knows (0: it does not): latency from the actual send is then the wire's, without the
    # client's own encoding and decoding around it, as a C client would measure it.
    sent_ns: int = 0
    received_ns: int = 0


class RecommendClient(Protocol):
    """The system under test. Never raises for RPC failures: they come back as an Outcome.
    `candidate_ids` (a re-ranking load only) is passed only when not empty."""

    async def recommend(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        candidate_ids: Sequence[int] = (),
    ) -> Outcome: ...


# Called exactly once per request with how it ended.
OnDone = Callable[[Outcome], None]


@runtime_checkable
class CallbackRecommendClient(Protocol):
    """The system under test without a task per request: `start` hands the request to the
    transport and returns at once; `on_done` is called later (or, for a request that fails at
    once, already inside `start`) exactly once with its Outcome. `cancel_all` ends every
    request in flight, each reported as CANCELLED. `transport` names the transport."""

    transport: str

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int] = (),
    ) -> None: ...

    def cancel_all(self) -> None: ...


class TimedRecommendClient(CallbackRecommendClient, Protocol):
    """A CallbackRecommendClient whose transport writes each request at its send time: `start`
    then takes `send_at_ns` up to `lead_ns` ahead, and `deliver()` ends the requests whose
    answers have arrived (it is called at each of the generator's wake-ups; the client ends
    them by itself too, later). The generator then wakes about once per `lead_ns`, not twice per
    request, and the send lateness is the transport's own."""

    lead_ns: int

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int] = (),
        send_at_ns: int = 0,
    ) -> None: ...

    def deliver(self) -> None: ...


class _TaskPerRequest:
    """Adapts an async RecommendClient: each request runs as a task of its own."""

    def __init__(self, client: RecommendClient) -> None:
        self._client = client
        self._tasks: set[asyncio.Task[None]] = set()
        self.transport: str = getattr(client, "transport", "")

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int] = (),
    ) -> None:
        task = asyncio.create_task(self._request(session_id, item_ids, k, timeout_s, on_done, candidate_ids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int],
    ) -> None:
        try:
            if candidate_ids:
                outcome = await self._client.recommend(session_id, item_ids, k, timeout_s, candidate_ids)
            else:
                outcome = await self._client.recommend(session_id, item_ids, k, timeout_s)
        except asyncio.CancelledError:
            on_done(_CANCELLED)
            raise
        except Exception:
            _log.exception("recommend_client_raised", session_id=session_id)
            outcome = _CLIENT_ERROR
        on_done(outcome)

    def cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()


_CANCELLED = Outcome(CANCELLED)
# What a generator that has not run holds instead of a timer: asyncio.sleep, nothing to close.
_NO_SLEEPER = PreciseSleeper.fallback()
_CLIENT_ERROR = Outcome(CLIENT_ERROR)


class Session(NamedTuple):
    """One visitor's clicks, oldest first; request j replays the prefix item_ids[: j + 1]. A
    replayed log's session also carries each click's time in seconds from the log's start."""

    session_id: str
    item_ids: Sequence[int]
    click_offsets_s: Sequence[float] | None = None


class LogPaceError(load_spec.InvalidLoadSpec):
    """Pacing by the log's time was asked for, but a session carries no click offsets."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            "log_speedup",
            f"session {session_id} has no click times; pacing by the log needs a replayed log "
            "with a timestamp column",
        )


# Where sessions come from: an async iterator that ends when the workload is exhausted.
SessionSource = AsyncIterator[Session]
ProgressCallback = Callable[[loadgen_pb2.TickProgress], None]


class _ActiveSession:
    __slots__ = ("click_offsets_s", "item_ids", "next_click", "session_id")

    def __init__(self, session: Session) -> None:
        self.session_id = session.session_id
        self.item_ids = session.item_ids
        self.click_offsets_s = session.click_offsets_s
        self.next_click = 0


class LoadGenerator:
    """Runs one load test: `await LoadGenerator(...).run()` returns the LoadSummary.

    Per tick: requests the ramp asks for but backpressure (in flight >= the tick's rate) or a
    lack of idle sessions kept back until the tick's end are `not_sent`, never carried over.
    Latency histograms hold OK answers only; failures are counted by status. Answers that
    arrive after the last tick (the drain, up to the request timeout) count in the summary
    but in no tick. `requests_offered == requests_sent + requests_not_sent` always holds.

    Cancelling `run()` stops sending, cancels the requests in flight (recorded as CANCELLED),
    still writes summary.json and keeps the summary in `self.summary`, then re-raises.

    With `candidates`, every request is a re-ranking request carrying a list drawn for it (the
    session's next click among them when it has one); the summary says so.
    """

    def __init__(
        self,
        client: RecommendClient | CallbackRecommendClient,
        sessions: SessionSource,
        profile: loadgen_pb2.LoadProfile,
        *,
        run_id: str = "",
        records_dir: Path | None = None,
        on_progress: ProgressCallback | None = None,
        candidates: CandidateSampler | None = None,
        log_speedup: float = 0.0,
    ) -> None:
        """`log_speedup` > 0 sends each click at its session's click offset / log_speedup after
        the start, open loop (LoadSpec.log_speedup); 0 paces by the profile's ramp."""
        load_spec.validate_profile(profile)
        if not (log_speedup == 0 or 0 < log_speedup <= MAX_LOG_SPEEDUP):
            raise load_spec.InvalidLoadSpec(
                "log_speedup", f"must be in (0, {MAX_LOG_SPEEDUP:,.0f}] or 0, got {log_speedup}"
            )
        self._log_speedup = log_speedup
        # Pacing by the log: the clicks that may be sent, by intended send time (a heap of
        # (intended_ns, order, session)), and the next session not yet due.
        self._due: list[tuple[int, int, _ActiveSession]] = []
        self._due_order = itertools.count()
        self._not_yet_due: _ActiveSession | None = None
        self._client: CallbackRecommendClient = (
            client if isinstance(client, CallbackRecommendClient) else _TaskPerRequest(client)
        )
        # A timed client's lead (0: requests are handed over when due); requests are then handed
        # over between one and two leads ahead, at wake-ups about one lead apart.
        self._lead_ns: int = getattr(self._client, "lead_ns", 0)
        self._timed = cast(TimedRecommendClient, self._client) if self._lead_ns > 0 else None
        self._sessions = SessionBuffer(sessions)
        self._profile = profile
        self._ticks: list[Tick] = ramp_ticks(
            profile.target_rate_per_s, profile.ramp_duration_s, profile.hold_duration_s
        )
        self._timeout_s = load_spec.request_timeout_s(profile)
        self._k = load_spec.items_per_recommendation(profile)
        self._run_id = run_id
        self._files = RunWriter(records_dir) if records_dir is not None else None
        self._on_progress = on_progress
        self._candidates = candidates
        self.summary: loadgen_pb2.LoadSummary | None = None

        self._ready: deque[_ActiveSession] = deque()
        self._in_flight = 0
        # Set when the last request in flight ends, while the run waits for that.
        self._all_answered: asyncio.Event | None = None
        self._in_hold = False
        self._start_ns = 0
        # Made by run() (a timerfd, closed when the run ends).
        self._sleeper = _NO_SLEEPER
        self._cpu_start_s = 0.0
        self._rows: list[Record] = []
        self._open_tick: Tick | None = None
        self._tick_sent = 0

        self._sent = 0
        self._ok = 0
        self._hold_ok = 0
        self._not_sent = 0
        self._offered = 0
        self._ticks_run = 0
        self._errors_by_status: Counter[str] = Counter()
        self._batch_size_sum = 0
        self._batch_size_count = 0
        self._from_intended = LatencyHistogram()
        self._from_actual = LatencyHistogram()
        self._server_queue = LatencyHistogram()
        self._server_inference = LatencyHistogram()
        self._network_and_overhead = LatencyHistogram()
        self._send_lateness = LatencyHistogram()
        # Per OK answer (from intended, from actual, queue, inference, network and overhead:
        # LATENCY_COLUMNS values in a row), and per request sent its lateness, all in us:
        # recorded into the histograms in batches. Flat int64 arrays, so that a batch becomes a
        # numpy array without a copy (numpy reading 256 tuples took 45 us, the loop held).
        self._ok_latencies_us = array("q")
        self._lateness_us = array("q")

        self._tick_completed = 0
        self._tick_ok = 0
        self._tick_errors = 0
        self._tick_from_intended = LatencyHistogram()
        # Fed together in batches (_record_latencies), one column of _ok_latencies_us each.
        self._ok_histograms = (
            self._from_intended,
            self._from_actual,
            self._server_queue,
            self._server_inference,
            self._network_and_overhead,
            self._tick_from_intended,
        )

    @property
    def ticks(self) -> list[Tick]:
        return list(self._ticks)

    def totals(self) -> RunTotals:
        """What the run counted so far: requests sent, not sent, and ended by status."""
        return RunTotals(self._sent, self._not_sent, {OK: self._ok, **self._errors_by_status})

    async def run(self) -> loadgen_pb2.LoadSummary:
        """Ramps, holds, waits for the last answers, and returns (and writes) the summary."""
        # The first session is pulled before the clock starts, so that a broken source fails
        # the run before any request instead of showing up as not_sent.
        await self._refill()
        if self._log_speedup and self._ready and self._ready[0].click_offsets_s is None:
            raise LogPaceError(self._ready[0].session_id)
        if self._files is not None:
            # Opened before the clock starts, so that tick 0 does not begin late.
            await self._files.open(self._run_info(time.perf_counter_ns(), time.time_ns()))
        with objects_frozen():  # no collection while requests are due (tick ends collect)
            return await self._run_clocked()

    async def _run_clocked(self) -> loadgen_pb2.LoadSummary:
        """The run from the start of its clock: sends, drains, and writes the summary."""
        self._start_ns = time.perf_counter_ns()
        self._cpu_start_s = time.process_time()
        cancelled = False
        self._sleeper = PreciseSleeper()
        try:
            try:
                if self._log_speedup:
                    await self._send_by_log()
                else:
                    await self._send_ticks()
                await self._drain()
            except asyncio.CancelledError:
                cancelled = True
        finally:
            # Also on errors: the summary of what ran is written before the error propagates.
            # Also when cancelled again meanwhile (a stopping server cancels its calls once more
            # at the end of its grace): the wait for the last answers is then cut short.
            self._sleeper.close()
            await self._sessions.aclose()
            self._abort_open_tick()
            try:
                await self._cancel_in_flight()
            except asyncio.CancelledError:
                cancelled = True
            self.summary = self._summarise()
            if self._files is not None:
                self._files.write(self._take_rows())
                try:
                    await self._files.close(self.summary)
                except asyncio.CancelledError:
                    cancelled = True  # raised by close() once summary.json is written
        if cancelled:
            raise asyncio.CancelledError
        return self.summary

    def _run_info(self, perf_counter_ns: int, wall_clock_epoch_ns: int) -> dict[str, Any]:
        return {
            "run_id": self._run_id,
            # Records hold time.perf_counter_ns() values; this pair, read together, maps them
            # to the wall clock: epoch_ns = wall_clock_epoch_ns + (t - perf_counter_ns).
            "perf_counter_ns": perf_counter_ns,
            "wall_clock_epoch_ns": wall_clock_epoch_ns,
            "profile": json_format.MessageToDict(self._profile, preserving_proto_field_name=True),
            "request_timeout_s": self._timeout_s,
            "k": self._k,
            "candidates_per_request": self._candidates.count if self._candidates is not None else 0,
            "tick_rates_per_s": [tick.rate_per_s for tick in self._ticks],
        }

    async def _send_ticks(self) -> None:
        for tick in self._ticks:
            self._in_hold = tick.in_hold
            self._ticks_run += 1
            tick_start_ns = self._start_ns + tick.index * TICK_NS
            tick_end_ns = tick_start_ns + TICK_NS
            self._open_tick = tick
            self._tick_sent = 0
            await self._send_tick(tick, tick_start_ns, tick_end_ns)
            # A timed client's tick ends as its next tick's first requests are handed over (the
            # bookkeeping below runs while the transport sends this tick's last ones on time).
            await self._sleeper.sleep_until(tick_end_ns - 2 * self._lead_ns)
            self._open_tick = None
            not_sent = tick.requests - self._tick_sent
            self._offered += tick.requests
            self._not_sent += not_sent
            self._end_tick(tick, self._tick_sent, not_sent)
            if self._workload_exhausted():
                _log.warning("workload_exhausted", tick=tick.index, run_id=self._run_id)
                break

    async def _send_by_log(self) -> None:
        """Open loop by the log's time: each click goes out at its own intended time (its offset
        in the log / log_speedup after the start), once its session's previous click answered;
        a tick's target is what fell due in it. Nothing is held back by requests in flight."""
        while self._ready:  # the session pulled before the clock started
            self._make_due(self._ready.popleft())
        for profile_tick in self._ticks:
            self._in_hold = profile_tick.in_hold
            self._ticks_run += 1
            tick_start_ns = self._start_ns + profile_tick.index * TICK_NS
            tick_end_ns = tick_start_ns + TICK_NS
            self._open_tick = profile_tick
            self._tick_sent = 0
            await self._send_due(profile_tick.index, tick_end_ns)
            await self._sleeper.sleep_until(tick_end_ns)
            self._open_tick = None
            sent = self._tick_sent
            self._offered += sent
            self._end_tick(Tick(profile_tick.index, float(sent), sent, profile_tick.in_hold), sent, 0)
            if self._workload_exhausted():
                _log.info("log_replayed", tick=profile_tick.index, run_id=self._run_id)
                break

    async def _send_due(self, tick: int, tick_end_ns: int) -> None:
        """Sends every click due before `tick_end_ns`, each at its intended time."""
        while True:
            await self._pull_sessions_due(tick_end_ns)
            if not self._due or self._due[0][0] >= tick_end_ns:
                # An answer still to come makes its session's next click due, perhaps in this tick.
                if self._in_flight == 0 or time.perf_counter_ns() >= tick_end_ns:
                    return
                await asyncio.sleep(WAIT_STEP_S)
                continue
            intended_ns = self._due[0][0]
            now_ns = time.perf_counter_ns()
            if now_ns < intended_ns:
                # An answer may make an earlier click due meanwhile: wake in small steps then.
                delay_s = (intended_ns - now_ns) / 1e9
                if self._in_flight and delay_s > WAIT_STEP_S:
                    await asyncio.sleep(WAIT_STEP_S)
                else:
                    await self._sleeper.sleep_until(intended_ns)
                continue
            _, _, session = heapq.heappop(self._due)
            self._send(session, tick, intended_ns)
            self._tick_sent += 1

    async def _pull_sessions_due(self, until_ns: int) -> None:
        """Takes sessions from the source while their first click falls due before `until_ns`
        (the log's sessions come in the order of their first click)."""
        while True:
            if self._not_yet_due is None:
                session = await self._sessions.take()
                if session is None:
                    return
                self._not_yet_due = _ActiveSession(session)
            if self._intended_ns(self._not_yet_due) >= until_ns:
                return
            self._make_due(self._not_yet_due)
            self._not_yet_due = None

    def _intended_ns(self, session: _ActiveSession) -> int:
        offsets = session.click_offsets_s
        if offsets is None or len(offsets) != len(session.item_ids):
            raise LogPaceError(session.session_id)
        return self._start_ns + int(offsets[session.next_click] * 1e9 / self._log_speedup)

    def _make_due(self, session: _ActiveSession) -> None:
        heapq.heappush(self._due, (self._intended_ns(session), next(self._due_order), session))

    def _abort_open_tick(self) -> None:
        """Accounts a tick the run stopped in: offered are the requests already due by now."""
        tick, self._open_tick = self._open_tick, None
        if tick is None or tick.requests == 0:
            return
        elapsed_ns = time.perf_counter_ns() - (self._start_ns + tick.index * TICK_NS)
        due = min(tick.requests, max(0, elapsed_ns * tick.requests // TICK_NS + 1))
        due = max(due, self._tick_sent)
        self._offered += due
        self._not_sent += due - self._tick_sent

    async def _send_tick(self, tick: Tick, tick_start_ns: int, tick_end_ns: int) -> None:
        """Sends the tick's requests on schedule, counting them in `self._tick_sent`."""
        requests = tick.requests
        # Backpressure bound of Algorithm 2: no more requests in flight than the tick's rate.
        max_in_flight = max(1, math.ceil(tick.rate_per_s))
        spacing_ns = TICK_NS / requests if requests else 0.0
        send_paced = partial(self._send_paced, tick, tick_start_ns, spacing_ns, max_in_flight)
        while self._tick_sent < requests:
            # What is due goes out at once (overdue too: the loop woke late, and the lateness
            # shows in its latency from intended); True: the next request is not due yet.
            if send_paced():
                # To the microsecond: asyncio's own timers wake on the next millisecond, and
                # requests due apart would leave together, a burst the schedule never asked for.
                # The timer's own wake-up sends while it can; what it cannot do (wait for an
                # answer or a session, end the tick) comes back here. A timed client's requests
                # are handed over up to two leads ahead, at wake-ups at least a lead apart.
                intended_ns = tick_start_ns + int(self._tick_sent * spacing_ns)
                lead_ns = self._lead_ns
                await self._sleeper.pace(intended_ns - 2 * lead_ns, max(spacing_ns, lead_ns), send_paced)
                continue
            if self._tick_sent >= requests:
                return
            # The request due cannot go out now; only waiting ends at the tick's end.
            now_ns = time.perf_counter_ns()
            if self._in_flight < max_in_flight:
                await self._refill()  # no session was ready: wait for the source
                if self._ready:
                    continue
                if self._workload_exhausted():
                    return
                # Every remaining session has a click in flight: wait for an answer.
            if now_ns >= tick_end_ns:
                return
            await asyncio.sleep(WAIT_STEP_S)

    def _send_paced(self, tick: Tick, tick_start_ns: int, spacing_ns: float, max_in_flight: int) -> bool:
        """Sends what is due now (from the timer's wake-up, or from _send_tick): True when the
        next request is not due yet, False when the tick is done or a request due cannot go out
        without waiting (backpressure, no session ready)."""
        if self._timed is not None:
            self._timed.deliver()  # answers first: their sessions may be the ones to send
        now_ns = time.perf_counter_ns() + 2 * self._lead_ns  # what may be handed over by now
        while self._tick_sent < tick.requests:
            intended_ns = tick_start_ns + int(self._tick_sent * spacing_ns)
            if now_ns < intended_ns:
                return True
            if self._in_flight >= max_in_flight:
                return False
            if not self._ready:
                session = self._sessions.take_nowait()
                if session is None:
                    return False
                self._ready.append(_ActiveSession(session))
            self._send(self._ready.popleft(), tick.index, intended_ns)
            self._tick_sent += 1
        return False

    def _send(self, session: _ActiveSession, tick: int, intended_ns: int) -> None:
        click_index = session.next_click
        self._in_flight += 1
        self._sent += 1
        # At most the session's latest MAX_REQUEST_ITEMS clicks: a replayed session may be longer
        # than a request may carry, and the model reads only the last ones anyway.
        prefix = session.item_ids[max(0, click_index + 1 - MAX_REQUEST_ITEMS) : click_index + 1]
        candidates: list[int] | None = None
        if self._candidates is not None:
            # Drawn before the actual send time: the loadgen's own work shows as its lateness.
            has_next = click_index + 1 < len(session.item_ids)
            candidates = self._candidates.draw(int(session.item_ids[click_index + 1]) if has_next else None)
        # Read by a tracing client's span, in this (the scheduler's) context or a task's copy.
        INTENDED_SEND_NS.set(intended_ns)
        actual_ns = time.perf_counter_ns()
        if self._timed is None:
            self._lateness_us.append((actual_ns - intended_ns) // 1000)
        on_done = partial(self._complete, session, click_index, tick, intended_ns, actual_ns)
        try:
            if self._timed is not None:
                # Handed over ahead: the transport writes it at intended_ns, and says when it did.
                self._timed.start(
                    session.session_id,
                    prefix,
                    self._k,
                    self._timeout_s,
                    on_done,
                    candidate_ids=candidates or (),
                    send_at_ns=intended_ns,
                )
            elif candidates is None:
                self._client.start(session.session_id, prefix, self._k, self._timeout_s, on_done)
            else:
                # Only a re-ranking load passes the keyword: a client need not know it otherwise.
                self._client.start(
                    session.session_id, prefix, self._k, self._timeout_s, on_done, candidate_ids=candidates
                )
        except Exception:
            _log.exception("recommend_client_raised", session_id=session.session_id)
            on_done(_CLIENT_ERROR)

    def _complete(
        self,
        session: _ActiveSession,
        click_index: int,
        tick: int,
        intended_ns: int,
        actual_ns: int,
        outcome: Outcome,
    ) -> None:
        completion_ns = outcome.received_ns or time.perf_counter_ns()
        if outcome.sent_ns:
            actual_ns = outcome.sent_ns
            if self._timed is not None:
                self._lateness_us.append((actual_ns - intended_ns) // 1000)
        self._in_flight -= 1
        if click_index + 1 < len(session.item_ids):
            session.next_click = click_index + 1
            if self._log_speedup:
                self._make_due(session)
            else:
                self._ready.append(session)
        from_intended_us = (completion_ns - intended_ns) // 1000
        from_actual_us = (completion_ns - actual_ns) // 1000
        self._tick_completed += 1
        if outcome.status == OK:
            self._ok += 1
            self._tick_ok += 1
            if self._in_hold:
                self._hold_ok += 1
            self._ok_latencies_us.extend(
                (
                    from_intended_us,
                    from_actual_us,
                    outcome.queue_us,
                    outcome.inference_us,
                    max(0, from_actual_us - outcome.server_total_us),
                )
            )
            if outcome.batch_size > 0:
                self._batch_size_sum += outcome.batch_size
                self._batch_size_count += 1
            if len(self._ok_latencies_us) >= LATENCY_BATCH * LATENCY_COLUMNS:
                self._record_latencies()
        else:
            self._tick_errors += 1
            self._errors_by_status[outcome.status] += 1
        # The one call into the records writer per request: a row, handed over in blocks.
        self._rows.append(
            Record(
                tick,
                session.session_id,
                click_index,
                intended_ns,
                actual_ns,
                completion_ns,
                outcome.status,
                from_intended_us,
                from_actual_us,
                outcome.queue_us,
                outcome.inference_us,
                outcome.batch_size,
                outcome.server_total_us,
                outcome.shard_fanout_us,
                outcome.shard_compute_us,
                outcome.shard_wire_bytes,
            )
        )
        if len(self._rows) >= ROWS_PER_WRITE and self._files is not None:
            self._files.write(self._take_rows())
        if self._in_flight == 0 and self._all_answered is not None:
            self._all_answered.set()

    def _record_latencies(self) -> None:
        """Moves the latencies gathered since the last call into the histograms, in one batch."""
        if self._ok_latencies_us:
            columns = np.frombuffer(self._ok_latencies_us, dtype=np.int64).reshape(-1, LATENCY_COLUMNS)
            self._ok_latencies_us = array("q")
            # One column per histogram of self._ok_histograms: the tick's takes from intended too.
            record_columns_us(self._ok_histograms, columns[:, [0, 1, 2, 3, 4, 0]])
        if self._lateness_us:
            self._send_lateness.record_many_us(np.frombuffer(self._lateness_us, dtype=np.int64))
            self._lateness_us = array("q")

    async def _refill(self) -> None:
        """Pulls one new session into the ready pool, unless the source is exhausted."""
        session = await self._sessions.take()
        if session is not None:
            self._ready.append(_ActiveSession(session))

    def _workload_exhausted(self) -> bool:
        return (
            self._sessions.exhausted
            and not self._ready
            and not self._due
            and self._not_yet_due is None
            and self._in_flight == 0
        )

    def _end_tick(self, tick: Tick, sent: int, not_sent: int) -> None:
        collect_young()
        self._record_latencies()
        p50_ms, p90_ms, p99_ms = self._tick_from_intended.percentiles_ms([50, 90, 99])
        progress = loadgen_pb2.TickProgress(
            run_id=self._run_id,
            tick=tick.index,
            target_rate_per_s=tick.rate_per_s,
            sent=sent,
            completed=self._tick_completed,
            errors=self._tick_errors,
            not_sent=not_sent,
            in_flight=self._in_flight,
            p50_ms=p50_ms,
            p90_ms=p90_ms,
            p99_ms=p99_ms,
        )
        if self._files is not None:
            self._files.write(self._take_rows(), SeriesRow.of(progress, self._tick_ok))
        self._tick_completed = self._tick_ok = self._tick_errors = 0
        self._tick_from_intended.reset()  # not a new one: that allocation stalled every tick start
        if self._on_progress is not None:
            self._on_progress(progress)

    def _take_rows(self) -> list[Record]:
        rows, self._rows = self._rows, []
        return rows

    async def _drain(self) -> None:
        """Lets the requests still in flight answer, up to their timeout."""
        # Answers from here on belong to no tick; they count in the summary only.
        self._in_hold = False
        await self._until_all_answered(self._timeout_s + DRAIN_SLACK_S)

    async def _cancel_in_flight(self) -> None:
        if self._in_flight > 0:
            self._client.cancel_all()
            await self._until_all_answered(CANCEL_WAIT_S)
            if self._in_flight > 0:
                _log.warning("requests_not_reported_after_cancel", in_flight=self._in_flight)

    async def _until_all_answered(self, timeout_s: float) -> None:
        if self._in_flight == 0:
            return
        self._all_answered = asyncio.Event()
        try:
            await asyncio.wait_for(self._all_answered.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            self._all_answered = None

    def _footprint(self, duration_s: float) -> loadgen_pb2.LoadGenFootprint:
        # Process CPU time (every thread: the event loop, grpc's poller, the records writer).
        cpu_s = max(0.0, time.process_time() - self._cpu_start_s)
        return loadgen_footprint(cpu_s, self._sent, duration_s, self._send_lateness.summary())

    def _summarise(self) -> loadgen_pb2.LoadSummary:
        self._record_latencies()
        duration_s = max((time.perf_counter_ns() - self._start_ns) / 1e9, 1e-9)
        hold_s = sum(1 for tick in self._ticks[: self._ticks_run] if tick.in_hold)
        failed = sum(self._errors_by_status.values())
        return loadgen_pb2.LoadSummary(
            run_id=self._run_id,
            requests_sent=self._sent,
            requests_ok=self._ok,
            requests_failed=failed,
            errors_by_status=dict(self._errors_by_status),
            requests_not_sent=self._not_sent,
            requests_offered=self._offered,
            duration_s=duration_s,
            achieved_rate_per_s=self._ok / duration_s,
            achieved_hold_rate_per_s=self._hold_ok / hold_s if hold_s else 0.0,
            latency_from_intended=self._from_intended.summary(),
            latency_from_actual=self._from_actual.summary(),
            server_queue=self._server_queue.summary(),
            server_inference=self._server_inference.summary(),
            network_and_overhead=self._network_and_overhead.summary(),
            mean_batch_size=(
                self._batch_size_sum / self._batch_size_count if self._batch_size_count else 0.0
            ),
            ticks=self._ticks_run,
            records_dir=str(self._files.folder) if self._files is not None else "",
            transport=self._client.transport,
            footprint=self._footprint(duration_s),
            candidates_per_request=self._candidates.count if self._candidates is not None else 0,
        )
