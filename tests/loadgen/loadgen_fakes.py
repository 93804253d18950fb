"""Fakes for the load generator tests: an in-process RecommendClient that checks session order,
session sources, and tiny RecommenderService / WorkloadService servicers for real servers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence

import grpc
from etude.services.loadgen.generator import OK, Outcome, Session

from etude.v1 import recommender_pb2, recommender_pb2_grpc, workload_pb2, workload_pb2_grpc


class FakeClient:
    """Answers OK after `delay_s(call_index)`; records calls and any session-order violation."""

    def __init__(
        self,
        delay_s: Callable[[int], float] = lambda _: 0.0,
        *,
        release: asyncio.Event | None = None,
        status: Callable[[int], str] = lambda _: OK,
        stall_loop_at_call: int | None = None,
        stall_loop_s: float = 0.0,
    ) -> None:
        self._delay_s = delay_s
        # When set, no call answers before the event is set (a server that hangs).
        self._release = release
        self._status = status
        # Blocks the whole event loop at that call, the way a GC pause or a busy loop would.
        self._stall_loop_at_call = stall_loop_at_call
        self._stall_loop_s = stall_loop_s
        self.calls = 0
        self.in_flight_sessions: set[str] = set()
        self.last_prefix: dict[str, list[int]] = {}
        self.violations: list[str] = []
        self.max_in_flight = 0

    async def recommend(self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float) -> Outcome:
        call_index = self.calls
        self.calls += 1
        items = list(item_ids)
        if session_id in self.in_flight_sessions:
            self.violations.append(f"{session_id}: sent while its previous click was in flight")
        previous = self.last_prefix.get(session_id, [])
        if items[:-1] != previous:
            self.violations.append(f"{session_id}: {items} does not extend {previous} by one")
        self.last_prefix[session_id] = items
        self.in_flight_sessions.add(session_id)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight_sessions))
        try:
            if call_index == self._stall_loop_at_call:
                time.sleep(self._stall_loop_s)  # noqa: ASYNC251 (the point)
            if self._release is not None:
                await self._release.wait()
            delay_s = self._delay_s(call_index)
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            return Outcome(
                self._status(call_index),
                queue_us=100,
                inference_us=200,
                batch_size=2,
                server_total_us=300,
            )
        finally:
            self.in_flight_sessions.discard(session_id)


async def sessions_from(sessions: Iterable[Session]) -> AsyncGenerator[Session, None]:
    for session in sessions:
        yield session


def endless_sessions(length: int = 3, first_item: int = 1) -> AsyncIterator[Session]:
    """Session i clicks items i+1, i+2, ...; never ends."""
    return sessions_from(
        Session(str(index), list(range(first_item + index, first_item + index + length)))
        for index in itertools.count()
    )


class FakeRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Answers Recommend after `delay_s` with the ServerTiming fields filled in."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.requests: list[recommender_pb2.RecommendRequest] = []

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return recommender_pb2.RecommendResponse(
            item_ids=list(range(1, request.k + 1)),
            scores=[1.0] * request.k,
            timing=recommender_pb2.ServerTiming(
                queue_us=50, inference_us=150, batch_size=1, server_total_us=250
            ),
        )


class FakeWorkload(workload_pb2_grpc.WorkloadServiceServicer):
    """Streams sessions of `session_length` clicks in batches of `sessions_per_batch`."""

    def __init__(self, session_length: int = 4, sessions_per_batch: int = 8) -> None:
        self.session_length = session_length
        self.sessions_per_batch = sessions_per_batch
        self.specs: list[workload_pb2.WorkloadSpec] = []
        self.batches_sent = 0

    async def StreamSessions(
        self, request: workload_pb2.WorkloadSpec, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[workload_pb2.SessionBatch]:
        self.specs.append(request)
        if request.catalog_size < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "catalog_size: must be >= 1")
        for batch_index in itertools.count():
            first = batch_index * self.sessions_per_batch
            lengths = [self.session_length] * self.sessions_per_batch
            items = [
                1 + (first + click) % request.catalog_size
                for click in range(self.session_length * self.sessions_per_batch)
            ]
            yield workload_pb2.SessionBatch(first_session_id=first, session_lengths=lengths, item_ids=items)
            self.batches_sent += 1


class FakeTimedClient:
    """A TimedRecommendClient: takes each request up to `lead_ns` ahead, "writes" it at its
    send_at_ns (plus `write_delay_ns`, as a busy thread would) and answers `answer_after_ns`
    later, noting when each was handed over. Answers reach the generator only through
    `deliver()`, or by themselves `ring_ns` after they arrived (as the timed transport rings)."""

    transport = "fake-timed"

    def __init__(
        self,
        lead_ns: int = 2_000_000,
        *,
        write_delay_ns: int = 100_000,
        answer_after_ns: int = 300_000,
        ring_ns: int = 3_000_000,
    ) -> None:
        self.lead_ns = lead_ns
        self._write_delay_ns = write_delay_ns
        self._answer_after_ns = answer_after_ns
        self._ring_ns = ring_ns
        self.handed_over: list[tuple[int, int]] = []  # (when, send_at_ns)
        # (answered_ns, sent_ns, on_done) of the requests not yet delivered
        self._pending: list[tuple[int, int, Callable[[Outcome], None]]] = []

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: Callable[[Outcome], None],
        candidate_ids: Sequence[int] = (),
        send_at_ns: int = 0,
    ) -> None:
        now_ns = time.perf_counter_ns()
        self.handed_over.append((now_ns, send_at_ns))
        sent_ns = max(send_at_ns, now_ns) + self._write_delay_ns
        answered_ns = sent_ns + self._answer_after_ns
        self._pending.append((answered_ns, sent_ns, on_done))
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + (answered_ns + self._ring_ns - now_ns) / 1e9, self.deliver)

    def deliver(self) -> None:
        now_ns = time.perf_counter_ns()
        arrived = [pending for pending in self._pending if pending[0] <= now_ns]
        self._pending = [pending for pending in self._pending if pending[0] > now_ns]
        for answered_ns, sent_ns, on_done in arrived:
            on_done(Outcome(OK, server_total_us=50, sent_ns=sent_ns, received_ns=answered_ns))

    def cancel_all(self) -> None:
        pending, self._pending = self._pending, []
        for _, _, on_done in pending:
            on_done(Outcome("CANCELLED"))
