"""A transport for the h2 client whose requests a C thread writes at their exact time (issue 16).

Sent one by one from Python, each request costs two wake-ups of the interpreter (its send, its
answer), and on a small virtual machine a wake-up costs more than the work it does: Python's
per-request path took 60-75 us of CPU paced against 21-31 us back to back
(benchmarks/bench_loadgen_work.py). Here the load generator hands requests over a few
milliseconds ahead; `_timed_socket.TimedSocket` (C, a thread of its own) writes each at its
intended time, noting when, and reads the answers at its next wake-up, each with the kernel's
time of arrival, an answer of the common shape already split into its three frames' payloads;
the protocol then parses them in a batch, when the generator next wakes or when they have waited
`ring_delay_ns`. Latencies run from the thread's write to the kernel's
arrival stamp, as benchmarks/openloop_grpc.c measures them.

Only what must happen at the right microsecond is in C; every HTTP/2 decision stays in the
protocol (h2_client._Connection), which sees this object as its asyncio transport.
"""

from __future__ import annotations

import asyncio
import socket
from array import array
from collections import deque
from typing import Any, Protocol

try:
    from . import _timed_socket
except ImportError:  # built without a C compiler: the h2 client keeps its asyncio transport
    _timed_socket = None  # type: ignore[assignment]


def available() -> bool:
    """True when the C extension was built (setup.py builds it where a C compiler is)."""
    return _timed_socket is not None


class SentAware(Protocol):
    """What a timed write belongs to: told when it went out."""

    def went_out(self, sent_ns: int) -> None: ...


class TimedProtocol(Protocol):
    def received_at(self, data: bytes, received_ns: int) -> None: ...

    def answered(
        self, received_ns: int, stream_id: int, headers: bytes, message: bytes, trailers: bytes
    ) -> None:
        """A whole answer of the common shape read at once (HEADERS, one DATA, trailers, one
        stream): the payloads of its three frames."""

    def connection_lost(self, exc: Exception | None) -> None: ...


class TimedTransport(asyncio.Transport):
    """The part of asyncio.Transport the h2 protocol uses, plus `write_at` and `deliver`.

    `sock` must be connected; the transport owns it from here on. Answers reach the protocol
    when `deliver()` is called, or by themselves once they have waited `ring_delay_ns`."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: TimedProtocol,
        loop: asyncio.AbstractEventLoop,
        ring_delay_ns: int,
    ) -> None:
        assert _timed_socket is not None, "timed_transport.available() is False"
        super().__init__()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._protocol = protocol
        self._loop = loop
        self._socket = _timed_socket.TimedSocket(sock.detach(), ring_delay_ns, split_answers=True)
        self._ring_fd = self._socket.ring_fd
        loop.add_reader(self._ring_fd, self.deliver)
        # Timed writes not yet known to be out, in the order handed over: the thread writes them
        # in that order, so the k-th time take() reports is the k-th of these.
        self._unsent: deque[SentAware] = deque()
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Writes `data` now, ahead of the timed writes not yet due (control frames)."""
        if not self._closed:
            self._socket.write(data)

    def write_at(self, at_ns: int, data: bytes | bytearray | memoryview, owner: SentAware) -> None:
        """Writes `data` at `at_ns` (time.perf_counter_ns(); 0 or past: at once) after the timed
        writes before it; `owner.went_out(sent_ns)` is called once it is known to be out."""
        if self._closed:
            return
        self._unsent.append(owner)
        self._socket.write_at(at_ns, data)

    def drop_unsent(self) -> list[Any]:
        """Takes back the timed writes not yet written: their owners, oldest first."""
        if self._closed:
            return []
        # The newest ones: any written meanwhile stay at the front, their times still to come.
        dropped = self._socket.drop_unsent()
        return [self._unsent.pop() for _ in range(dropped)][::-1]

    def deliver(self) -> None:
        """Hands the protocol what happened since the last call: send times, then answers."""
        if self._closed:
            return
        sent, arrivals, ended = self._socket.take()
        if sent:
            unsent = self._unsent
            for sent_ns in array("q", sent):
                unsent.popleft().went_out(sent_ns)
        received_at, answered = self._protocol.received_at, self._protocol.answered
        for arrival in arrivals:
            if len(arrival) == 2:
                received_at(arrival[1], arrival[0])
            else:
                answered(*arrival)
        if ended is not None and not self._closed:
            self._close(ended)

    def is_closing(self) -> bool:
        return self._closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        """Closes the socket (what was not written yet is not); the protocol hears of it once."""
        if not self._closed:
            self._close(None)

    def _close(self, exc: Exception | None) -> None:
        self._closed = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._ring_fd)
        self._socket.close()
        self._unsent.clear()
        # As asyncio does: the protocol hears of the end on the loop's next turn, not inside close().
        self._loop.call_soon(self._protocol.connection_lost, exc)
