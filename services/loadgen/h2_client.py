"""Etude's own gRPC client for the Recommend call (`transport: h2`): unary gRPC calls written
straight onto HTTP/2 connections by an asyncio Protocol, without grpcio.

Why: grpcio's Python call path costs about 200 us of CPU per call on a development core, more
than the load generator may take from the server it measures (issue 16). On the wire this is
exactly a grpcio unary call (one HTTP/2 stream per request, the same headers, grpc-timeout,
trailers), so the server cannot tell them apart; what is gone is grpcio's per-call Python
machinery. Each request costs one frame write and, for its answer, the parse of three frames.

What it does: one connection per address the target resolves to (a headless Service's pods),
requests spread round-robin; HTTP/2 flow control (a large receive window announced once and
refilled; sends held while the server's window or stream limit is exhausted); SETTINGS, PING,
GOAWAY and RST_STREAM as RFC 9113 says; each request's deadline sent as grpc-timeout and
enforced here (the stream is reset when it passes); TLS with ALPN h2 and a bearer token when
the process is configured with them. A lost connection ends its requests as UNAVAILABLE and
is re-established in the background; while no connection is up, requests fail fast as
UNAVAILABLE, like grpcio's channel in TRANSIENT_FAILURE.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import socket
import ssl
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

import hpack
import structlog
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from etude.security import AUTHORIZATION_HEADER, ClientSecurity
from etude.telemetry import TRACEPARENT, RequestTracing, request_tracing, unsampled_traceparent

from . import h2_frames as h2
from . import timed_transport
from .client import (
    RECOMMEND_PATH,
    SPAN_NAME,
    STATUS_NAMES,
    TargetUnavailable,
    _outcome_of_bytes,
    _propagated,
    _rpc_attributes,
    encode_request,
)
from .generator import CANCELLED, INTENDED_SEND_NS, OnDone, Outcome
from .timed_transport import TimedTransport

_log = structlog.get_logger()

TRANSPORT_H2 = "h2"
USER_AGENT = "etude-loadgen-h2"
# Announced once per connection; refilled when half of it has been read.
RECEIVE_WINDOW_BYTES = 2**30
RECONNECT_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
TLS_SHUTDOWN_TIMEOUT_S = 1.0
# How often answered calls are dropped from the deadline heap (see _expire).
PRUNE_INTERVAL_S = 0.05
# With the timed transport: requests are taken this long before they are due (the load generator
# then wakes about once per SEND_AHEAD_NS, not twice per request), and answers read reach the
# protocol within RING_DELAY_NS when nothing woke it before (longer than SEND_AHEAD_NS, so that
# under load the generator's own wake-ups deliver them).
SEND_AHEAD_NS = 2_000_000
RING_DELAY_NS = 3_000_000
# A request the server refuses (REFUSED_STREAM, at its stream limit) is sent again up to this often.
MAX_REFUSALS = 5

_CANCELLED = Outcome(CANCELLED)
_UNAVAILABLE = Outcome("UNAVAILABLE")
_DEADLINE_EXCEEDED = Outcome("DEADLINE_EXCEEDED")
_INTERNAL = Outcome("INTERNAL")


class _Statuses(NamedTuple):
    """What a response's header block says: its :status and grpc-status (None: not in it)."""

    http_status: int | None
    grpc_status: int | None


def _statuses(headers: Iterable[tuple[bytes | str, bytes | str]]) -> _Statuses:
    http_status = grpc_status = None
    for name, value in headers:
        if name == b":status":
            http_status = int(value)
        elif name == b"grpc-status":
            grpc_status = int(value)
    return _Statuses(http_status, grpc_status)


# HEADERS flags that need more than one whole block: padding, priority, CONTINUATION to come.
_PLAIN_HEADERS_MASK = h2.FLAG_PADDED | h2.FLAG_PRIORITY | h2.FLAG_END_HEADERS


def _ended(outcome: Outcome) -> None:
    """The callback of a call that has ended (finish() drops later endings before it)."""


class _Call:
    """One request: its callback, deadline, stream and (when sampled) span."""

    __slots__ = ("connection", "deadline", "done", "http_status", "message", "on_done", "payload",
                 "refusals", "reset_when_sent", "send_at_ns", "sent_ns", "span", "stream_id",
                 "timeout_s", "traceparent")  # fmt: skip

    def __init__(
        self, on_done: OnDone, deadline: float, payload: bytes, timeout_s: float, send_at_ns: int = 0
    ) -> None:
        self.on_done = on_done
        self.send_at_ns = send_at_ns  # when to write it (a timed transport; 0: at once)
        self.deadline = deadline
        self.payload = payload
        self.timeout_s = timeout_s
        self.traceparent: str | None = None
        self.stream_id = 0
        self.connection: _Connection | None = None
        self.message: bytes | bytearray | None = None
        self.http_status = 200
        self.done = False
        self.refusals = 0
        self.span: trace.Span | None = None
        self.sent_ns = 0  # when its frames were handed to the socket
        # Reset before its timed write went out: the stream is reset once it has been opened.
        self.reset_when_sent = False

    @property
    def sent(self) -> bool:
        return self.sent_ns != 0

    def went_out(self, sent_ns: int) -> None:
        """Its timed write went out at `sent_ns`."""
        self.sent_ns = sent_ns
        if self.reset_when_sent and self.connection is not None:
            self.connection.sent_late_reset(self)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying unary gRPC calls."""

    def __init__(self, client: H2RecommendClient, header_block: bytes) -> None:
        self._client = client
        self._header_block = header_block
        # Set by connection_made when the transport writes requests at their time (a C thread).
        self._timed: TimedTransport | None = None
        # The request's header block for each timeout (one per run in practice): built once.
        self._header_blocks: dict[float, bytes] = {}
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._calls: dict[int, _Call] = {}
        self._waiting: deque[_Call] = deque()  # held for the server's window or stream limit
        self._next_stream_id = 1
        self._send_window = h2.DEFAULT_WINDOW_BYTES
        self._max_streams = 2**31
        self._max_frame_bytes = h2.DEFAULT_MAX_FRAME_BYTES
        self._hold_until_stream_end = False
        self._received_unacknowledged = 0
        self._decoder = hpack.Decoder()
        self._read_ns = 0
        # Header blocks that left the HPACK table as it was decode the same until it changes:
        # what they say (their statuses), by block.
        self._decoded: dict[bytes, _Statuses] = {}
        self._continued: tuple[int, int, bytearray] | None = None
        # Usable once the server's SETTINGS are known (its stream limit among them).
        self.usable = False
        loop = asyncio.get_running_loop()
        self.settled: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: a cast, not an isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        if isinstance(transport, TimedTransport):
            self._timed = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = {
            h2.SETTINGS_ENABLE_PUSH: 0,
            h2.SETTINGS_INITIAL_WINDOW_SIZE: h2.MAX_WINDOW_BYTES,
        }
        self._transport.write(
            h2.PREFACE
            + h2.settings_frame(settings)
            + h2.window_update_frame(0, RECEIVE_WINDOW_BYTES - h2.DEFAULT_WINDOW_BYTES)
        )

    def data_received(self, data: bytes) -> None:
        # Every answer ending in this read arrived by now: its latency stops here, not after
        # the parsing below (the answer's Outcome carries it).
        self.received_at(data, time.perf_counter_ns())

    def received_at(self, data: bytes, received_ns: int) -> None:
        """Parses `data`, read from the socket at `received_ns` (the timed transport's stamp)."""
        self._read_ns = received_ns
        buffer: bytes | bytearray = self._buffer
        if buffer or not isinstance(data, bytes):
            self._buffer += data
        else:
            buffer = data  # the common case: whole frames, parsed without a copy into the buffer
        offset, size = 0, len(buffer)
        handlers = self._handlers
        while size - offset >= h2.FRAME_HEADER_BYTES:
            length, frame_type, flags, stream_id = h2.parse_frame_header(buffer, offset)
            end = offset + h2.FRAME_HEADER_BYTES + length
            if end > size:
                break
            payload = bytes(buffer[offset + h2.FRAME_HEADER_BYTES : end])  # no copy when `buffer` is bytes
            offset = end
            if self._continued is not None and frame_type != h2.CONTINUATION:
                self._fail_connection("HEADERS not followed by CONTINUATION")
                return
            if frame_type < len(handlers):  # frames of unknown types are ignored (RFC 9113 4.1)
                handlers[frame_type](self, flags, stream_id, payload)
        if isinstance(buffer, bytearray):
            del buffer[:offset]
        else:
            self._buffer += buffer[offset:]  # a frame's start, kept for the next read

    def answered(
        self, received_ns: int, stream_id: int, headers: bytes, message: bytes, trailers: bytes
    ) -> None:
        """A whole answer read at `received_ns`, split by the timed transport: the payloads of
        its HEADERS, DATA and trailing HEADERS. What the frame-by-frame parse would do, without
        it, when both header blocks are known (decoding them leaves HPACK's table as it is) and
        no frame is half read."""
        decoded = self._decoded
        head, tail = decoded.get(headers), decoded.get(trailers)
        if head is None or tail is None or self._buffer or self._continued is not None:
            self.received_at(h2.answer_frames(stream_id, headers, message, trailers), received_ns)
            return
        self._read_ns = received_ns
        self._count_received(len(message))
        call = self._calls.get(stream_id)
        if call is None:
            return  # reset here meanwhile
        for http_status in (head.http_status, tail.http_status):
            if http_status is not None:
                call.http_status = http_status
        self._add_message(call, message)
        self._end(stream_id, self._outcome(call, tail.grpc_status))

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        calls = list(self._calls.values()) + list(self._waiting)
        self._calls.clear()
        self._waiting.clear()
        for call in calls:
            self._client.finish(call, _UNAVAILABLE)
        for future in (self.settled, self.closed):
            if not future.done():
                future.set_result(None)
        self._client.connection_ended(self)

    # -- sending -----------------------------------------------------------------------------

    def send(self, call: _Call) -> None:
        call.connection = self
        if self._waiting or not self._can_send(call):
            self._waiting.append(call)
        else:
            self._write(call)

    def _can_send(self, call: _Call) -> bool:
        return (
            not self._hold_until_stream_end
            and len(self._calls) < self._max_streams
            and len(call.payload) <= self._send_window
        )

    def _write(self, call: _Call) -> None:
        assert self._transport is not None
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        if self._next_stream_id > h2.LAST_CLIENT_STREAM_ID:
            self.usable = False  # no ids left: the client opens a fresh connection
        call.stream_id = stream_id
        self._calls[stream_id] = call
        headers = self._header_blocks.get(call.timeout_s)
        if headers is None:
            headers = self._header_block + h2.literal_header(b"grpc-timeout", h2.grpc_timeout(call.timeout_s))
            self._header_blocks[call.timeout_s] = headers
        if call.traceparent is not None:
            headers += h2.literal_header(TRACEPARENT.encode(), call.traceparent.encode())
        payload = call.payload
        self._send_window -= len(payload)
        step = self._max_frame_bytes
        if len(payload) <= step:  # the common case: one DATA frame
            frames = h2.request_frames(stream_id, headers, payload)
        else:
            # DATA frames of at most the server's frame size, the last one ending the stream.
            out = [h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, stream_id, headers)]
            out += [
                h2.frame(h2.DATA, 0, stream_id, payload[at : at + step])
                for at in range(0, len(payload) - step, step)
            ]
            out.append(h2.frame(h2.DATA, h2.FLAG_END_STREAM, stream_id, payload[(len(out) - 1) * step :]))
            frames = b"".join(out)
        if self._timed is not None:
            self._timed.write_at(call.send_at_ns, frames, call)  # the thread notes when it went out
        else:
            call.sent_ns = time.perf_counter_ns()
            self._transport.write(frames)

    def _send_waiting(self) -> None:
        while self._waiting and self.usable:
            call = self._waiting[0]
            if call.done:
                self._waiting.popleft()
                continue
            if not self._can_send(call):
                return
            self._waiting.popleft()
            self._write(call)

    def reset(self, call: _Call) -> None:
        """Forgets `call` and, when it was sent, asks the server to stop working on it."""
        if (
            call.stream_id
            and self._calls.pop(call.stream_id, None) is not None
            and self._transport is not None
        ):
            if self._timed is not None and not call.sent:
                # Its HEADERS are still to go out (a reset stream not yet opened is a protocol error).
                call.reset_when_sent = True
            else:
                self._transport.write(h2.rst_stream_frame(call.stream_id, h2.ERROR_CANCEL))
            self._after_stream_end()

    def sent_late_reset(self, call: _Call) -> None:
        """The timed write of a call reset meanwhile went out: its stream is reset now."""
        if self._transport is not None:
            self._transport.write(h2.rst_stream_frame(call.stream_id, h2.ERROR_CANCEL))

    def drop_unsent(self) -> list[_Call]:
        """Takes back the calls whose timed writes have not gone out (their streams never opened)."""
        if self._timed is None:
            return []
        dropped = self._timed.drop_unsent()
        for call in dropped:
            self._calls.pop(call.stream_id, None)
            call.stream_id = 0
        return dropped

    def deliver(self) -> None:
        """Parses what the timed transport has read (nothing to do for an asyncio one)."""
        if self._timed is not None:
            self._timed.deliver()

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()

    def _after_stream_end(self, *, freed: bool = True) -> None:
        if freed:
            self._hold_until_stream_end = False
        if self._waiting:
            self._send_waiting()
        if not self.usable and not self._calls and self._transport is not None:
            self._transport.close()  # drained after GOAWAY or stream ids ran out

    def _end(self, stream_id: int, outcome: Outcome) -> None:
        call = self._calls.pop(stream_id, None)
        if call is not None:
            self._client.finish(call, outcome)
            self._after_stream_end()

    def _fail_connection(self, reason: str) -> None:
        _log.warning("h2_connection_failed", reason=reason)
        self.close()

    # -- frames received ---------------------------------------------------------------------

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._count_received(len(payload))
        call = self._calls.get(stream_id)
        if call is None:
            return
        if flags & h2.FLAG_PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        self._add_message(call, payload)
        if flags & h2.FLAG_END_STREAM:
            self._end(stream_id, _INTERNAL)  # a gRPC response always ends with trailers

    def _count_received(self, size: int) -> None:
        """Connection-level flow control: DATA payload bytes received, given back in halves."""
        self._received_unacknowledged += size
        if self._received_unacknowledged >= RECEIVE_WINDOW_BYTES // 2 and self._transport is not None:
            self._transport.write(h2.window_update_frame(0, self._received_unacknowledged))
            self._received_unacknowledged = 0

    @staticmethod
    def _add_message(call: _Call, payload: bytes) -> None:
        if call.message is None:
            call.message = payload
        else:
            if isinstance(call.message, bytes):
                call.message = bytearray(call.message)
            call.message += payload

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & _PLAIN_HEADERS_MASK == h2.FLAG_END_HEADERS:  # the common case: one whole block
            self._on_header_block(flags, stream_id, payload)
            return
        start, pad = 0, 0
        if flags & h2.FLAG_PADDED:
            pad, start = payload[0], 1
        if flags & h2.FLAG_PRIORITY:
            start += 5
        block = payload[start : len(payload) - pad]
        if flags & h2.FLAG_END_HEADERS:
            self._on_header_block(flags, stream_id, block)
        else:
            self._continued = (stream_id, flags, bytearray(block))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continued is None or self._continued[0] != stream_id:
            self._fail_connection("CONTINUATION without HEADERS")
            return
        self._continued[2].extend(payload)
        if flags & h2.FLAG_END_HEADERS:
            first_stream, first_flags, block = self._continued
            self._continued = None
            self._on_header_block(first_flags, first_stream, bytes(block))

    def _on_header_block(self, flags: int, stream_id: int, block: bytes) -> None:
        # Every block is decoded, even for a stream already reset here: HPACK's table is shared.
        http_status, grpc_status = self._decoded.get(block) or self._decode(block)
        call = self._calls.get(stream_id)
        if call is None:
            return
        if http_status is not None:
            call.http_status = http_status
        if flags & h2.FLAG_END_STREAM:
            self._end(stream_id, self._outcome(call, grpc_status))

    def _outcome(self, call: _Call, grpc_status: int | None) -> Outcome:
        if grpc_status is None:
            return Outcome(h2.HTTP_STATUS.get(call.http_status, "UNKNOWN"))
        if grpc_status != 0:
            return Outcome(STATUS_NAMES.get(grpc_status, "UNKNOWN"))
        message = call.message
        if message is None or len(message) < 5 or message[0] != 0:
            return _INTERNAL  # OK without exactly one uncompressed message
        return _outcome_of_bytes(message[5:], call.sent_ns, self._read_ns)

    def _decode(self, block: bytes) -> _Statuses:
        """What `block` says, decoded with HPACK (and kept while the table stays as it was)."""
        table = self._decoder.header_table
        before = (len(table.dynamic_entries), table.dynamic_entries[0] if table.dynamic_entries else None)
        statuses = _statuses(self._decoder.decode(block, raw=True))
        after = (len(table.dynamic_entries), table.dynamic_entries[0] if table.dynamic_entries else None)
        if after == before and after[1] is before[1]:
            self._decoded[block] = statuses
        else:
            self._decoded.clear()  # the table changed: what was cached may decode differently now
        return statuses

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        error_code = h2.u32(payload)
        call = self._calls.get(stream_id)
        if error_code == h2.ERROR_REFUSED_STREAM and call is not None and call.refusals < MAX_REFUSALS:
            # Never processed (RFC 9113 8.7): sent again once one of our streams has ended, as the
            # server frees a stream slot a moment after it sends that stream's trailers.
            del self._calls[stream_id]
            call.refusals += 1
            call.stream_id, call.message = 0, None
            self._waiting.appendleft(call)
            self._hold_until_stream_end = True
            self._after_stream_end(freed=False)
            return
        self._end(stream_id, Outcome(h2.RST_STREAM_STATUS.get(error_code, "INTERNAL")))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & h2.FLAG_ACK or self._transport is None:
            return
        settings = h2.parse_settings(payload)
        self._max_streams = settings.get(h2.SETTINGS_MAX_CONCURRENT_STREAMS, self._max_streams)
        self._max_frame_bytes = settings.get(h2.SETTINGS_MAX_FRAME_SIZE, self._max_frame_bytes)
        self._transport.write(h2.frame(h2.SETTINGS, h2.FLAG_ACK, 0))
        if not self.settled.done():
            self.usable = self._next_stream_id <= h2.LAST_CLIENT_STREAM_ID
            self.settled.set_result(None)
        self._send_waiting()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not flags & h2.FLAG_ACK and self._transport is not None:
            self._transport.write(h2.frame(h2.PING, h2.FLAG_ACK, 0, payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        """The server stops taking streams: those above its last one were never processed."""
        self.usable = False
        last_stream_id = h2.u32(payload) & 0x7FFF_FFFF
        for unsent in self.drop_unsent():  # not written yet: never to be
            self._client.finish(unsent, _UNAVAILABLE)
        for refused in [sid for sid in self._calls if sid > last_stream_id]:
            self._end(refused, _UNAVAILABLE)
        waiting, self._waiting = self._waiting, deque()
        for call in waiting:
            self._client.finish(call, _UNAVAILABLE)
        self._after_stream_end()

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            self._send_window += h2.u32(payload) & 0x7FFF_FFFF
            self._send_waiting()

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._fail_connection("PUSH_PROMISE although push is disabled")

    def _on_priority(self, flags: int, stream_id: int, payload: bytes) -> None:
        """Advice on the client's own streams' order: nothing to do for a client (RFC 9113 5.3.2)."""

    # By frame type (DATA = 0 ... CONTINUATION = 9): an index, not a dict lookup, per frame.
    _handlers: tuple[Any, ...] = (
        _on_data,
        _on_headers,
        _on_priority,
        _on_rst_stream,
        _on_settings,
        _on_push_promise,
        _on_ping,
        _on_goaway,
        _on_window_update,
        _on_continuation,
    )


class H2RecommendClient:
    """A CallbackRecommendClient sending unary Recommend calls over HTTP/2 connections to `target`.

    `await connect(timeout_s)` before the first request; `await aclose()` at the end.
    """

    transport = TRANSPORT_H2

    def __init__(
        self,
        target: str,
        *,
        security: ClientSecurity | None = None,
        request_spans: bool = True,
        tracing: RequestTracing | None = None,
        timed: bool = True,
    ) -> None:
        """`timed`: requests written by the timed transport's C thread at their send time,
        handed over `lead_ns` ahead (plaintext only, and only where the extension was built);
        otherwise by the event loop when `start` is called."""
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"target: expected HOST:PORT, got {target!r}")
        self._host, self._port, self._target = host.strip("[]"), int(port), target
        security = security or ClientSecurity()
        self._ssl = _ssl_context(security) if security.tls else None
        block = h2.request_header_block(
            RECOMMEND_PATH, target, tls=self._ssl is not None, user_agent=USER_AGENT
        )
        if security.auth_token:
            block += h2.literal_header(
                AUTHORIZATION_HEADER.encode(), f"Bearer {security.auth_token}".encode()
            )
        self._header_block = block
        self._timed = timed and self._ssl is None and timed_transport.available()
        # How long before its send time the load generator may hand a request over (start's
        # send_at_ns); 0: at its send time.
        self.lead_ns = SEND_AHEAD_NS if self._timed else 0
        self._tracing = (tracing if tracing is not None else request_tracing()) if request_spans else None
        self._tracer = self._tracing.tracer(__name__) if self._tracing is not None else None
        self._span_attributes = _rpc_attributes(target)
        self._connections: dict[tuple[Any, ...], _Connection] = {}
        self._round_robin: list[_Connection] = []
        self._next = 0
        # Calls by deadline: those sent with a deadline no earlier than the last one's (every
        # call, with the load generator's one timeout) in a FIFO, the others in a heap.
        self._in_order: deque[_Call] = deque()
        self._out_of_order: list[tuple[float, int, _Call]] = []
        self._sequence = itertools.count()
        self._timer_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        # The loop connect() ran on. Asked for per request, asyncio.get_running_loop() would cost
        # a getpid() system call each time on CPython 3.11 (its fork check).
        self._loop: asyncio.AbstractEventLoop | None = None

    async def connect(self, timeout_s: float) -> None:
        """Connects to every address the target resolves to; TargetUnavailable if none answers."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._connect_missing(), timeout_s)
        except (TimeoutError, OSError) as error:
            raise TargetUnavailable(f"target: no server reachable at {self._target!r}: {error}") from error
        if not self._round_robin:
            raise TargetUnavailable(
                f"target: no HTTP/2 server answered at {self._target!r} within {timeout_s:g} s "
                "(it closed the connection: TLS or plaintext mismatch?)"
            )
        # Who writes the requests: the timed transport's thread, or the event loop (TLS, or the
        # C extension not built): the load generator's footprint differs by a third.
        _log.info("h2_connected", target=self._target, writer="timed" if self._timed else "event-loop")

    async def _connect_missing(self) -> None:
        loop = asyncio.get_running_loop()
        addresses = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        wanted = {(family, address) for family, _, _, _, address in addresses}
        missing = [key for key in wanted if key not in self._connections]
        results = await asyncio.gather(*(self._open(*key) for key in missing), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors and not self._round_robin:
            raise errors[0]

    async def _open(self, family: int, address: tuple[Any, ...]) -> None:
        loop = asyncio.get_running_loop()
        if self._timed:
            connection = await self._open_timed(loop, family, address)
        else:
            connection = await self._open_asyncio(loop, family, address)
        await connection.settled
        if self._closed or not connection.usable:
            connection.close()
            return
        self._connections[(family, address)] = connection
        self._round_robin.append(connection)

    async def _open_timed(
        self, loop: asyncio.AbstractEventLoop, family: int, address: tuple[Any, ...]
    ) -> _Connection:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        connection = _Connection(self, self._header_block)
        connection.connection_made(TimedTransport(sock, connection, loop, RING_DELAY_NS))
        return connection

    async def _open_asyncio(
        self, loop: asyncio.AbstractEventLoop, family: int, address: tuple[Any, ...]
    ) -> _Connection:
        _, connection = await loop.create_connection(
            lambda: _Connection(self, self._header_block),
            address[0],
            address[1],
            family=family,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl is not None else None,
            # Closing waits this long for the server's TLS close_notify (asyncio's default is 30 s).
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S if self._ssl is not None else None,
        )
        return connection

    def connection_ended(self, connection: _Connection) -> None:
        for key, known in list(self._connections.items()):
            if known is connection:
                del self._connections[key]
        if connection in self._round_robin:
            self._round_robin.remove(connection)
        self._reconnect_soon()

    def _reconnect_soon(self) -> None:
        if not self._closed and self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            for delay_s in itertools.chain(RECONNECT_BACKOFF_S, itertools.repeat(RECONNECT_BACKOFF_S[-1])):
                await asyncio.sleep(delay_s)
                if self._closed:
                    return
                try:
                    await self._connect_missing()
                except OSError:
                    continue
                if self._round_robin:
                    return
        finally:
            self._reconnecting = None

    def _pick(self) -> _Connection | None:
        connections = self._round_robin
        for _ in range(len(connections)):
            self._next = (self._next + 1) % len(connections)
            connection = connections[self._next]
            if connection.usable:
                return connection
        if connections:
            # Draining (GOAWAY, stream ids used up): replace it while it finishes its calls.
            for connection in list(connections):
                if not connection.usable:
                    self.connection_ended(connection)
        else:
            self._reconnect_soon()
        return None

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int] = (),
        send_at_ns: int = 0,
    ) -> None:
        """Sends the request (a re-ranking one with `candidate_ids`) and returns; `on_done` gets
        its Outcome when it ends. `send_at_ns` (time.perf_counter_ns(), at most `lead_ns` ahead):
        when to write it, where the transport is timed; its deadline counts from then."""
        loop = self._loop or asyncio.get_running_loop()
        ahead_s = 0.0
        if send_at_ns and self.lead_ns:
            ahead_s = max(0, send_at_ns - time.perf_counter_ns()) / 1e9
        call = _Call(
            on_done,
            loop.time() + ahead_s + timeout_s,
            h2.grpc_message(encode_request(session_id, item_ids, k, 0, candidate_ids)),
            timeout_s,
            send_at_ns if self.lead_ns else 0,
        )
        connection = self._pick()
        if connection is None:
            call.done = True
            on_done(_UNAVAILABLE)
            return
        if self._tracing is not None:
            self._trace(call, session_id, len(item_ids))
        if not self._in_order or call.deadline >= self._in_order[-1].deadline:
            self._in_order.append(call)
        else:
            heapq.heappush(self._out_of_order, (call.deadline, next(self._sequence), call))
        if self._timer is None:
            # Also when its deadline is far: the answered calls before it leave the queue every
            # PRUNE_INTERVAL_S, not a whole timeout's worth (and their callbacks) at once.
            self._arm_expiry(loop, min(call.deadline, loop.time() + PRUNE_INTERVAL_S))
        elif call.deadline < self._timer_at:
            self._arm_expiry(loop, call.deadline)
        connection.send(call)

    def _arm_expiry(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(at, self._expire)
        self._timer_at = at

    def _trace(self, call: _Call, session_id: str, clicks: int) -> None:
        """Unsampled requests carry a traceparent saying so; sampled ones get a client span."""
        assert self._tracing is not None and self._tracer is not None
        parent = trace.get_current_span().get_span_context()
        sampled = parent.trace_flags.sampled if parent.is_valid else self._tracing.sample_root()
        if not sampled:
            carrier = dict(_propagated()) if parent.is_valid else {TRACEPARENT: unsampled_traceparent()}
            call.traceparent = carrier.get(TRACEPARENT)
            return
        actual_ns = time.perf_counter_ns()
        to_epoch_ns = time.time_ns() - actual_ns
        intended_ns = INTENDED_SEND_NS.get(actual_ns)
        attributes: dict[str, AttributeValue] = {
            **self._span_attributes,
            "etude.session_id": session_id,
            "etude.click_index": clicks - 1,
            "etude.intended_send_ns": intended_ns,
        }
        span = self._tracer.start_span(
            SPAN_NAME, kind=trace.SpanKind.CLIENT, start_time=intended_ns + to_epoch_ns, attributes=attributes
        )
        if not call.send_at_ns:  # sent now; a timed write says when it went out at the call's end
            _mark_sent(span, intended_ns, actual_ns)
        carrier = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        call.traceparent = carrier.get(TRACEPARENT)
        call.span = span

    def finish(self, call: _Call, outcome: Outcome) -> None:
        """Ends `call` once with `outcome` (later endings, e.g. an answer after its deadline, are dropped)."""
        if call.done:
            return
        call.done = True
        if call.span is not None:
            if call.send_at_ns and call.sent_ns:
                _mark_sent(call.span, call.send_at_ns, call.sent_ns)
            _end_span(call.span, outcome)
        if not outcome.sent_ns and call.sent_ns and call.send_at_ns:
            # A timed write's failure too says when it went out (the generator's send lateness).
            outcome = outcome._replace(sent_ns=call.sent_ns)
        # The call waits in the deadline queue until the next prune: what it holds goes now.
        on_done, call.on_done, call.payload = call.on_done, _ended, b""
        try:
            on_done(outcome)
        except Exception:
            _log.exception("h2_on_done_raised")

    def deliver(self) -> None:
        """Ends the calls whose answers the timed transport has read (the load generator calls
        this each time it wakes; otherwise they come within RING_DELAY_NS)."""
        for connection in self._round_robin:
            connection.deliver()

    def _expire(self) -> None:
        """Ends the requests past their deadline and drops the answered ones; re-arms itself."""
        self._timer = None
        self.deliver()  # an answer read but not yet parsed is not past its deadline
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        in_order, out_of_order = self._in_order, self._out_of_order
        while in_order and (in_order[0].done or in_order[0].deadline <= now):
            self._end_call(in_order.popleft(), _DEADLINE_EXCEEDED)
        while out_of_order and (out_of_order[0][2].done or out_of_order[0][0] <= now):
            self._end_call(heapq.heappop(out_of_order)[2], _DEADLINE_EXCEEDED)
        if in_order or out_of_order:
            next_deadline = min(
                in_order[0].deadline if in_order else math.inf,
                out_of_order[0][0] if out_of_order else math.inf,
            )
            # Also every PRUNE_INTERVAL_S: the calls answered meanwhile leave a few hundred at a
            # time, not a timeout's worth at once (6,000 heap pops at 6,000 req/s with a 1 s
            # timeout held the loop 6-16 ms, once a second).
            self._arm_expiry(loop, min(next_deadline, now + PRUNE_INTERVAL_S))

    def _end_call(self, call: _Call, outcome: Outcome) -> None:
        """Ends a call still in flight with `outcome`, its stream reset; an ended one is left be."""
        if not call.done:
            if call.connection is not None:
                call.connection.reset(call)
            self.finish(call, outcome)

    def cancel_all(self) -> None:
        """Ends every request in flight as CANCELLED (and resets its stream)."""
        for connection in list(self._round_robin):
            connection.drop_unsent()  # never written: ended below without a reset
        calls = [*self._in_order, *(call for _, _, call in self._out_of_order)]
        self._in_order.clear()
        self._out_of_order.clear()
        for call in calls:
            self._end_call(call, _CANCELLED)

    async def recommend(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        candidate_ids: Sequence[int] = (),
    ) -> Outcome:
        """One request, awaited (the RecommendClient interface)."""
        answered: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        # on_done is called exactly once (finish() drops later endings).
        self.start(session_id, item_ids, k, timeout_s, answered.set_result, candidate_ids)
        return await answered

    async def aclose(self) -> None:
        """Cancels what is in flight and closes every connection."""
        self._closed = True
        self.cancel_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        connections = list(self._round_robin)
        for connection in connections:
            connection.close()
        await asyncio.gather(*(connection.closed for connection in connections), return_exceptions=True)


def _mark_sent(span: trace.Span, intended_ns: int, sent_ns: int) -> None:
    """When the request went out (time.perf_counter_ns()), on its client span."""
    span.set_attribute("etude.send_delay_us", (sent_ns - intended_ns) // 1000)
    span.add_event("etude.sent", timestamp=sent_ns + time.time_ns() - time.perf_counter_ns())


def _end_span(span: trace.Span, outcome: Outcome) -> None:
    if outcome.status != "OK":
        span.set_status(trace.StatusCode.ERROR, outcome.status)
    code = next((value for value, name in STATUS_NAMES.items() if name == outcome.status), 2)
    span.set_attribute("rpc.grpc.status_code", code)
    span.end()


def _ssl_context(security: ClientSecurity) -> ssl.SSLContext:
    """TLS as grpcio's channel does it: the configured CA, ALPN h2, the client certificate if any."""
    assert security.ca_pem is not None
    context = ssl.create_default_context(cadata=security.ca_pem.decode())
    context.set_alpn_protocols(["h2"])
    if security.cert_pem is not None and security.key_pem is not None:
        # ssl loads a certificate chain from files only; the files live for the load call.
        with tempfile.TemporaryDirectory() as folder:
            cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
            with open(cert_path, "wb") as cert_file:
                cert_file.write(security.cert_pem)
            with open(key_path, "wb") as key_file:
                os.chmod(key_path, 0o600)
                key_file.write(security.key_pem)
            context.load_cert_chain(cert_path, key_path)
    return context
