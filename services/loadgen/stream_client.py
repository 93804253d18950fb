"""The streaming transport: every request on one long-lived RecommendStream call, answers matched
back to their request by request_id (`transport: stream` in the LoadSpec).

A stream carries one deadline for all its messages, so each request carries its own timeout
(RecommendRequest.timeout_ms, which the server's admission and queue honour) and the timeout is
also kept here: a request unanswered after it ends as DEADLINE_EXCEEDED and its late answer is
dropped.
A stream that fails ends every request still on it with the stream's status; the next request
opens a new one. Requests on a stream get no client span: when tracing is on, the stream carries
an unsampled traceparent, so that the server does not sample them either.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import grpc

from etude.telemetry import TRACEPARENT, RequestTracing, request_tracing, unsampled_traceparent
from etude.v1 import recommender_pb2

from .client import RPC_SERVICE, STATUS_NAMES, encode_request, outcome_of
from .generator import CANCELLED, OnDone, Outcome

STREAM_PATH = f"/{RPC_SERVICE}/RecommendStream"
TRANSPORT_STREAM = "stream"
# How often requests past their timeout are looked for (the precision of a stream's timeout).
TIMEOUT_SWEEP_S = 0.005

_CANCELLED_OUTCOME = Outcome(CANCELLED)
_DEADLINE_EXCEEDED_OUTCOME = Outcome("DEADLINE_EXCEEDED")


class GrpcStreamRecommendClient:
    """A CallbackRecommendClient over RecommenderService/RecommendStream on `channel`.

    Requests are answered in completion order; `start` only queues the request for the one
    writer of the stream. Call `aclose()` when done with it.
    """

    transport = TRANSPORT_STREAM

    def __init__(
        self, channel: grpc.aio.Channel, *, request_spans: bool = True, tracing: RequestTracing | None = None
    ) -> None:
        self._open_call = channel.stream_stream(
            STREAM_PATH, request_serializer=None, response_deserializer=None, _registered_method=True
        )
        tracing = (tracing if tracing is not None else request_tracing()) if request_spans else None
        self._tracing_on = tracing is not None
        # request_id -> (deadline in perf_counter_ns, on_done), in send order.
        self._pending: dict[int, tuple[int, OnDone]] = {}
        self._next_request_id = 1
        # (request_id, serialised request) waiting for the stream's writer.
        self._outbox: deque[tuple[int, bytes]] = deque()
        self._call: grpc.aio.StreamStreamCall[Any, Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._outbox_ready: asyncio.Event | None = None
        self._sweep: asyncio.TimerHandle | None = None

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int] = (),
    ) -> None:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._pending[request_id] = (time.perf_counter_ns() + int(timeout_s * 1e9), on_done)
        # The request's own deadline crosses the wire too: the stream's is shared by all.
        timeout_ms = max(1, round(timeout_s * 1000))
        self._outbox.append(
            (request_id, encode_request(session_id, item_ids, k, request_id, candidate_ids, timeout_ms))
        )
        if self._call is None:
            self._open()
        assert self._outbox_ready is not None
        self._outbox_ready.set()
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(TIMEOUT_SWEEP_S, self._expire)

    def _open(self) -> None:
        metadata = ((TRACEPARENT, unsampled_traceparent()),) if self._tracing_on else ()
        call = self._open_call(metadata=metadata)
        self._call = call
        self._outbox_ready = asyncio.Event()
        self._writer = asyncio.create_task(self._write_all(call, self._outbox_ready))
        self._reader = asyncio.create_task(self._read_all(call))

    async def _write_all(
        self, call: grpc.aio.StreamStreamCall[Any, Any], outbox_ready: asyncio.Event
    ) -> None:
        """The stream's one writer: grpc allows one write in flight; the rest wait in the outbox."""
        try:
            while True:
                await outbox_ready.wait()
                outbox_ready.clear()
                while self._outbox:
                    request_id, payload = self._outbox.popleft()
                    # A request that timed out while it waited here is not sent at all: the
                    # server would only spend time on an answer nobody reads.
                    if request_id in self._pending:
                        await call.write(payload)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the stream ended; the reader reports its status

    async def _read_all(self, call: grpc.aio.StreamStreamCall[Any, Any]) -> None:
        status = "UNKNOWN"
        try:
            while (message := await call.read()) is not grpc.aio.EOF:
                self._answer(recommender_pb2.RecommendStreamResponse.FromString(message))
            status = (await call.code()).name
        except grpc.aio.AioRpcError as error:
            status = error.code().name
        except asyncio.CancelledError:
            status = CANCELLED
            raise
        finally:
            if self._call is call:
                self._end_stream(Outcome(status if status != "OK" else "UNAVAILABLE"))

    def _answer(self, answer: recommender_pb2.RecommendStreamResponse) -> None:
        entry = self._pending.pop(answer.request_id, None)
        if entry is None:
            return  # it already ended as DEADLINE_EXCEEDED
        on_done = entry[1]
        if answer.HasField("response"):
            on_done(outcome_of(answer.response))
        else:
            on_done(Outcome(STATUS_NAMES.get(answer.error.code, "UNKNOWN")))

    def _expire(self) -> None:
        """Ends the requests past their timeout; re-arms itself while requests are pending."""
        self._sweep = None
        now_ns = time.perf_counter_ns()
        # Send order is deadline order for a fixed timeout: stop at the first one still running.
        expired = []
        for request_id, (deadline_ns, _) in self._pending.items():
            if deadline_ns > now_ns:
                break
            expired.append(request_id)
        for request_id in expired:
            self._pending.pop(request_id)[1](_DEADLINE_EXCEEDED_OUTCOME)
        if self._pending:
            self._sweep = asyncio.get_running_loop().call_later(TIMEOUT_SWEEP_S, self._expire)

    def _end_stream(self, outcome: Outcome) -> None:
        """Forgets the current stream and ends every request still pending with `outcome`."""
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        if self._writer is not None:
            self._writer.cancel()
        self._outbox.clear()
        pending, self._pending = self._pending, {}
        for _, on_done in pending.values():
            on_done(outcome)

    def cancel_all(self) -> None:
        """Cancels the stream; every request in flight reports CANCELLED."""
        self._end_stream(_CANCELLED_OUTCOME)

    async def aclose(self) -> None:
        """Ends the stream (requests still pending report CANCELLED) and its tasks."""
        self._end_stream(_CANCELLED_OUTCOME)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        tasks = [task for task in (self._writer, self._reader) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._writer = self._reader = None
