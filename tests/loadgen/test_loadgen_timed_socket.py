"""The timed socket (services/loadgen/_timed_socket.c) on real loopback TCP connections: writes
leave in order and never before their time, and say when they left; what arrives is read with
its arrival time on time.perf_counter_ns()'s clock, answer by answer; Python is rung once bytes
have waited; the connection's end is reported, never lost."""

from __future__ import annotations

import itertools
import select
import socket
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from etude.services.loadgen import h2_frames as h2
from etude.services.loadgen import timed_transport

pytestmark = pytest.mark.skipif(not timed_transport.available(), reason="built without a C compiler")
if timed_transport.available():
    from etude.services.loadgen._timed_socket import TimedSocket

MS = 1_000_000
RING_DELAY_NS = 20 * MS


def test_the_extension_is_built_where_a_compiler_is() -> None:
    # pyproject.toml builds it optionally; CI and the development machines have a compiler, so
    # a silent fallback to the pure-Python path would go unnoticed but for this.
    assert timed_transport.available()


@contextmanager
def connected(
    kernel_stamps: bool = True, split_answers: bool = False
) -> Iterator[tuple[TimedSocket, socket.socket]]:
    """A TimedSocket on one end of a loopback TCP connection, and the peer's end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
    timed = TimedSocket(
        client.detach(), RING_DELAY_NS, kernel_stamps=kernel_stamps, split_answers=split_answers
    )
    peer.settimeout(5.0)
    try:
        yield timed, peer
    finally:
        timed.close()
        peer.close()


def receive_exactly(peer: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = peer.recv(size - len(data))
        assert chunk, "the connection ended early"
        data += chunk
    return data


def take_until(timed: TimedSocket, count: int, timeout_s: float = 5.0) -> list[Any]:
    """Arrivals taken until `count` have come."""
    arrivals: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(arrivals) < count and time.monotonic() < deadline:
        select.select([timed.ring_fd], [], [], 0.05)
        arrivals += timed.take()[1]
    return arrivals


def answer(stream_id: int) -> bytes:
    """A gRPC answer's frames as a server writes them: headers, one message, trailers."""
    return (
        h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, stream_id, b"\x88")
        + h2.frame(h2.DATA, 0, stream_id, b"\x00\x00\x00\x00\x00")
        + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, stream_id, b"\x40\x00")
    )


def test_timed_writes_leave_in_order_never_early_and_say_when() -> None:
    with connected() as (timed, peer):
        start_ns = time.perf_counter_ns()
        due = [start_ns + 30 * MS, start_ns + 10 * MS + 30 * MS, start_ns + 20 * MS + 30 * MS]
        for index, at_ns in enumerate(due):
            timed.write_at(at_ns, b"request%d;" % index)
        assert receive_exactly(peer, 27) == b"request0;request1;request2;"
        sent_ns = list(array("q", timed.take()[0]))
    assert len(sent_ns) == 3
    assert all(sent >= at for sent, at in zip(sent_ns, due, strict=True))
    assert sent_ns == sorted(sent_ns)


def test_a_timed_write_due_before_the_one_ahead_of_it_still_waits_its_turn() -> None:
    with connected() as (timed, peer):
        now_ns = time.perf_counter_ns()
        timed.write_at(now_ns + 30 * MS, b"first;")
        timed.write_at(now_ns, b"second;")  # overdue, but behind "first"
        assert receive_exactly(peer, 13) == b"first;second;"


def test_an_immediate_write_goes_ahead_of_timed_writes_not_yet_due() -> None:
    with connected() as (timed, peer):
        timed.write_at(time.perf_counter_ns() + 200 * MS, b"later;")
        timed.write(b"control;")
        assert receive_exactly(peer, 8) == b"control;"
        assert receive_exactly(peer, 6) == b"later;"


def test_dropped_timed_writes_never_leave_and_are_counted() -> None:
    with connected() as (timed, peer):
        far_ns = time.perf_counter_ns() + 10_000 * MS
        timed.write_at(0, b"now;")
        assert receive_exactly(peer, 4) == b"now;"
        timed.write_at(far_ns, b"never1;")
        timed.write_at(far_ns, b"never2;")
        assert timed.drop_unsent() == 2
        timed.write(b"after;")
        assert receive_exactly(peer, 6) == b"after;"
        assert len(timed.take()[0]) == 8  # one time: the write that left


@pytest.mark.parametrize("kernel_stamps", [True, False], ids=["kernel-stamps", "read-when-woken"])
def test_arrivals_carry_their_time_on_the_perf_counter_clock(kernel_stamps: bool) -> None:
    with connected(kernel_stamps) as (timed, peer):
        before_ns = time.perf_counter_ns()
        peer.sendall(answer(1))
        arrivals = take_until(timed, 1)
        after_ns = time.perf_counter_ns()
    assert b"".join(data for _, data in arrivals) == answer(1)
    assert all(before_ns <= at_ns <= after_ns for at_ns, _ in arrivals)


def test_with_kernel_stamps_two_answers_in_one_write_are_read_one_by_one() -> None:
    with connected() as (timed, peer):
        if not timed.kernel_stamps:
            pytest.skip("this kernel gives no receive timestamps")
        peer.sendall(answer(1) + answer(3))
        arrivals = take_until(timed, 2)
    # Each read ends with an answer's trailers: each answer has an arrival of its own.
    assert [data for _, data in arrivals] == [answer(1), answer(3)]


def test_split_answers_hands_over_an_answer_of_the_common_shape_as_its_three_payloads() -> None:
    with connected(split_answers=True) as (timed, peer):
        if not timed.kernel_stamps:
            pytest.skip("this kernel gives no receive timestamps: reads may join answers")
        peer.sendall(answer(1) + answer(3))
        arrivals = take_until(timed, 2)
    assert [arrival[1:] for arrival in arrivals] == [
        (1, b"\x88", b"\x00\x00\x00\x00\x00", b"\x40\x00"),
        (3, b"\x88", b"\x00\x00\x00\x00\x00", b"\x40\x00"),
    ]


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(h2.frame(h2.SETTINGS, 0, 0) + answer(1), id="another frame before it"),
        pytest.param(
            h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 1, b"\x88"), id="trailers only"
        ),
        pytest.param(
            h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, 1, b"\x88")
            + h2.frame(h2.DATA, h2.FLAG_PADDED, 1, b"\x01\x00\x00\x00\x00\x00\x00")
            + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 1, b"\x40\x00"),
            id="padded data",
        ),
        pytest.param(
            h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, 1, b"\x88")
            + h2.frame(h2.DATA, 0, 1, b"\x00\x00\x00")
            + h2.frame(h2.DATA, 0, 1, b"\x00\x00")
            + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 1, b"\x40\x00"),
            id="two data frames",
        ),
        pytest.param(
            h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, 1, b"\x88")
            + h2.frame(h2.DATA, 0, 3, b"\x00\x00\x00\x00\x00")
            + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 1, b"\x40\x00"),
            id="frames of two streams",
        ),
        pytest.param(
            h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, 2**31 + 1, b"\x88")
            + h2.frame(h2.DATA, 0, 2**31 + 1, b"\x00\x00\x00\x00\x00")
            + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 2**31 + 1, b"\x40\x00"),
            id="the reserved bit set",
        ),
    ],
)
def test_split_answers_hands_over_any_other_read_as_it_came(read: bytes) -> None:
    with connected(split_answers=True) as (timed, peer):
        peer.sendall(read)
        arrivals = take_until(timed, 1)
        time.sleep(0.02)
        arrivals += timed.take()[1]
    assert all(len(arrival) == 2 for arrival in arrivals)
    assert b"".join(data for _, data in arrivals) == read


def test_an_answer_split_over_two_writes_is_read_whole_across_them() -> None:
    with connected() as (timed, peer):
        whole = answer(1) + answer(3)
        peer.sendall(whole[:13])  # a frame header cut in two, then the rest
        time.sleep(0.02)
        peer.sendall(whole[13:])
        arrivals = take_until(timed, 2)
        arrivals += timed.take()[1]
    assert b"".join(data for _, data in arrivals) == whole
    if timed.kernel_stamps:  # the reads still end where the first answer does
        assert len(answer(1)) in itertools.accumulate(len(data) for _, data in arrivals)


def test_python_is_rung_once_bytes_have_waited_the_ring_delay() -> None:
    with connected() as (timed, peer):
        peer.sendall(answer(1))
        assert select.select([timed.ring_fd], [], [], 5.0)[0], "never rung"
        rung_ns = time.perf_counter_ns()
        arrivals = timed.take()[1]
        assert arrivals
        assert rung_ns - arrivals[0][0] >= RING_DELAY_NS
        # Taken: the ring is quiet until something new waits.
        assert not select.select([timed.ring_fd], [], [], 0.0)[0]


def test_the_peer_closing_is_reported_after_what_it_sent() -> None:
    with connected() as (timed, peer):
        peer.sendall(answer(1))
        peer.close()
        arrivals: list[tuple[int, bytes]] = []
        ended = None
        deadline = time.monotonic() + 5.0
        while ended is None and time.monotonic() < deadline:
            select.select([timed.ring_fd], [], [], 0.05)
            _, more, ended = timed.take()
            arrivals += more
    assert b"".join(data for _, data in arrivals) == answer(1)
    assert isinstance(ended, ConnectionResetError)


def test_a_closed_timed_socket_refuses_writes_and_closes_once() -> None:
    with connected() as (timed, _):
        timed.close()
        timed.close()
        with pytest.raises(ValueError, match="closed"):
            timed.write(b"x")
        with pytest.raises(ValueError, match="closed"):
            timed.write_at(0, b"x")
        assert timed.ring_fd == -1


def test_a_negative_ring_delay_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(ValueError, match="ring_delay_ns"):
        TimedSocket(sock.fileno(), -1)
