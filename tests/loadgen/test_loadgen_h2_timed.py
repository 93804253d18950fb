"""The h2 client over the timed transport (services/loadgen/timed_transport.py), against a real
grpcio server on loopback: a request handed over ahead leaves at its send time and says when;
what never left is taken back cleanly; TLS stays on the event loop's transport."""

from __future__ import annotations

import asyncio
import time

import pytest
from etude.services.loadgen import timed_transport
from etude.services.loadgen.generator import CANCELLED, OK, Outcome
from etude.services.loadgen.h2_client import SEND_AHEAD_NS, H2RecommendClient
from test_loadgen_h2_client import all_outcomes, grpc_server, h2_client
from test_security import Pki, pki  # noqa: F401 (the fixture)

from etude.security import ClientSecurity

ON_EVERY_EVENT_LOOP = True
pytestmark = pytest.mark.skipif(not timed_transport.available(), reason="built without a C compiler")
MS = 1_000_000


async def test_a_request_handed_over_ahead_leaves_at_its_send_time() -> None:
    async with grpc_server() as (port, seen), h2_client(f"127.0.0.1:{port}") as client:
        assert client.lead_ns == SEND_AHEAD_NS > 0
        answered: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        send_at_ns = time.perf_counter_ns() + 300 * MS
        client.start("s1", [1, 2, 3], 5, 5.0, answered.set_result, send_at_ns=send_at_ns)
        await asyncio.sleep(0.05)
        assert seen.requests == []  # handed over, not sent
        outcome = await asyncio.wait_for(answered, 5.0)
    assert outcome.status == OK
    assert send_at_ns <= outcome.sent_ns < outcome.received_ns
    assert len(seen.requests) == 1


async def test_requests_not_yet_sent_are_cancelled_without_reaching_the_server() -> None:
    async with grpc_server() as (port, seen), h2_client(f"127.0.0.1:{port}") as client:
        cancelled: list[Outcome] = []
        later_ns = time.perf_counter_ns() + 10_000 * MS
        for index in range(3):
            client.start(f"s{index}", [1], 5, 5.0, cancelled.append, send_at_ns=later_ns)
        client.cancel_all()
        assert [outcome.status for outcome in cancelled] == [CANCELLED] * 3
        assert all(outcome.sent_ns == 0 for outcome in cancelled)
        # The connection is as good as before: the streams never opened left no trace on it.
        (outcome,) = await all_outcomes(client, 1)
    assert outcome.status == OK
    assert [request.session_id for request in seen.requests] == ["s0"]  # all_outcomes' one


async def test_a_failed_request_still_says_when_it_left() -> None:
    async with grpc_server(delay_s=5.0) as (port, _), h2_client(f"127.0.0.1:{port}") as client:
        answered: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        send_at_ns = time.perf_counter_ns() + 1 * MS
        client.start("s1", [1], 5, 0.2, answered.set_result, send_at_ns=send_at_ns)
        outcome = await asyncio.wait_for(answered, 5.0)
    assert outcome.status == "DEADLINE_EXCEEDED"
    assert outcome.sent_ns >= send_at_ns  # the generator's send lateness counts it too


async def test_tls_stays_on_the_event_loops_transport(pki: Pki) -> None:  # noqa: F811
    client = H2RecommendClient("localhost:1", security=ClientSecurity(ca_pem=pki.ca), request_spans=False)
    assert client.lead_ns == 0
    await client.aclose()


async def test_an_untimed_client_is_asked_for_by_name() -> None:
    client = H2RecommendClient("127.0.0.1:1", timed=False, request_spans=False)
    assert client.lead_ns == 0
    await client.aclose()


async def test_a_call_ended_before_its_timed_write_left_is_reset_once_it_has() -> None:
    # The race behind it: a deadline passing while the thread is late to write (the deadline
    # counts from the send time, so only then). Resetting a stream not yet opened would be a
    # connection error (RFC 9113 5.1), so the reset waits for the write.
    async with grpc_server(delay_s=5.0) as (port, seen), h2_client(f"127.0.0.1:{port}") as client:
        ended: list[Outcome] = []
        client.start("s1", [1], 5, 5.0, ended.append, send_at_ns=time.perf_counter_ns() + 100 * MS)
        (call,) = client._in_order
        client._end_call(call, Outcome("DEADLINE_EXCEEDED"))
        assert [outcome.status for outcome in ended] == ["DEADLINE_EXCEEDED"]
        assert call.reset_when_sent and not call.sent
        await asyncio.sleep(0.3)
        client.deliver()
        assert call.sent  # it left, and its reset after it
        # The connection took the late reset as a plain cancel: the next call is answered.
        quick: list[Outcome] = []
        client.start("s2", [1], 5, 0.2, quick.append)
        await asyncio.sleep(0.5)
        client.deliver()
    assert [outcome.status for outcome in quick] == ["DEADLINE_EXCEEDED"]  # the server's delay
    assert [request.session_id for request in seen.requests] == ["s1", "s2"]
