"""The load generator's own HTTP/2 gRPC client (`transport: h2`) against real grpcio servers on
loopback: what the server sees is a unary gRPC call (deadline, metadata, message), and the
client copes with what HTTP/2 servers do (stream limits, large messages, several addresses,
going away and coming back, TLS)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from etude.services.inference.recommender import Recommender
from etude.services.loadgen.client import RECOMMEND_PATH, SPAN_NAME, TargetUnavailable
from etude.services.loadgen.generator import INTENDED_SEND_NS, OK, Outcome
from etude.services.loadgen.h2_client import USER_AGENT, H2RecommendClient
from test_security import Pki, pki  # noqa: F401 (the fixture)
from test_tracing import in_memory, recommender, serving  # noqa: F401 (the fixture)

from etude.security import ClientSecurity
from etude.v1 import recommender_pb2

_SERVICE, _METHOD = RECOMMEND_PATH.strip("/").split("/")
# Every test here runs on asyncio's loop and on uvloop's, the one `etude serve loadgen` uses
# (tests/loadgen/conftest.py).
ON_EVERY_EVENT_LOOP = True
# ... and with both writers of its requests (tests/loadgen/conftest.py).
pytestmark = pytest.mark.usefixtures("h2_writer")
SERVER_SPAN = RECOMMEND_PATH.strip("/")


class Seen:
    """What the server saw of each call."""

    def __init__(self) -> None:
        self.requests: list[recommender_pb2.RecommendRequest] = []
        self.time_remaining_s: list[float] = []
        self.metadata: list[dict[str, str]] = []


@asynccontextmanager
async def grpc_server(
    *,
    port: int = 0,
    delay_s: float = 0.0,
    options: list[tuple[str, Any]] | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[tuple[int, Seen]]:
    """A grpcio server answering Recommend with k items after `delay_s`, recording each call."""
    seen = Seen()

    async def recommend(request_bytes: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = recommender_pb2.RecommendRequest.FromString(request_bytes)
        seen.requests.append(request)
        seen.time_remaining_s.append(context.time_remaining() or 0.0)
        seen.metadata.append({key: str(value) for key, value in context.invocation_metadata() or ()})
        if delay_s:
            await asyncio.sleep(delay_s)
        response = recommender_pb2.RecommendResponse(item_ids=range(1, request.k + 1))
        response.timing.batch_size = 1
        response.timing.server_total_us = 7
        return response.SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        _SERVICE, {_METHOD: grpc.unary_unary_rpc_method_handler(recommend)}
    )
    server = grpc.aio.server(options=options or [])
    server.add_generic_rpc_handlers((handler,))
    address = f"127.0.0.1:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    try:
        yield bound, seen
    finally:
        await server.stop(0)


@asynccontextmanager
async def h2_client(target: str, **kwargs: Any) -> AsyncIterator[H2RecommendClient]:
    client = H2RecommendClient(target, request_spans=False, **kwargs)
    try:
        await client.connect(5.0)
        yield client
    finally:
        await client.aclose()


async def all_outcomes(
    client: H2RecommendClient, count: int, timeout_s: float = 5.0, **request: Any
) -> list[Outcome]:
    """Starts `count` requests at once; their outcomes in request order."""
    outcomes: dict[int, Outcome] = {}
    finished = asyncio.Event()

    def done(index: int, outcome: Outcome) -> None:
        outcomes[index] = outcome
        if len(outcomes) == count:
            finished.set()

    for index in range(count):
        client.start(
            request.get("session_id", f"s{index}"),
            request.get("item_ids", [1, 2, 3]),
            request.get("k", 5),
            timeout_s,
            lambda outcome, index=index: done(index, outcome),
        )
    await asyncio.wait_for(finished.wait(), timeout_s + 5.0)
    return [outcomes[index] for index in range(count)]


async def test_the_server_sees_a_unary_grpc_call_with_its_deadline_and_message() -> None:
    async with grpc_server() as (port, seen), h2_client(f"127.0.0.1:{port}") as client:
        started_ns = time.perf_counter_ns()
        (outcome,) = await all_outcomes(
            client, 1, timeout_s=2.0, session_id="visitor-9", item_ids=[5, 6], k=4
        )
        ended_ns = time.perf_counter_ns()
    assert outcome._replace(sent_ns=0, received_ns=0) == Outcome(OK, batch_size=1, server_total_us=7)
    # The answer says when its request went on the wire and when the answer came off it.
    assert started_ns < outcome.sent_ns < outcome.received_ns < ended_ns
    (request,) = seen.requests
    assert (request.session_id, list(request.item_ids), request.k) == ("visitor-9", [5, 6], 4)
    # The deadline crossed the wire as grpc-timeout.
    assert 1.5 < seen.time_remaining_s[0] <= 2.0
    assert seen.metadata[0]["user-agent"].startswith(USER_AGENT)


async def test_requests_beyond_the_servers_stream_limit_wait_for_a_free_stream() -> None:
    options = [("grpc.max_concurrent_streams", 4)]
    async with (
        grpc_server(delay_s=0.05, options=options) as (port, seen),
        h2_client(f"127.0.0.1:{port}") as client,
    ):
        outcomes = await all_outcomes(client, 40)
    assert [outcome.status for outcome in outcomes] == [OK] * 40
    assert len(seen.requests) == 40


async def test_a_message_larger_than_one_frame_arrives_whole() -> None:
    session_id = "x" * 50_000  # more than three 16 KiB DATA frames
    async with grpc_server() as (port, seen), h2_client(f"127.0.0.1:{port}") as client:
        (outcome,) = await all_outcomes(client, 1, session_id=session_id)
    assert outcome.status == OK
    assert seen.requests[0].session_id == session_id


async def test_a_request_past_its_deadline_ends_at_the_deadline_and_the_stream_is_reset() -> None:
    async with grpc_server(delay_s=1.0) as (port, _), h2_client(f"127.0.0.1:{port}") as client:
        started = time.monotonic()
        (outcome,) = await all_outcomes(client, 1, timeout_s=0.1)
        waited_s = time.monotonic() - started
        # The connection is still good for the next request.
        (after,) = await all_outcomes(client, 1, timeout_s=3.0)
    assert outcome.status == "DEADLINE_EXCEEDED"
    assert waited_s < 0.6
    assert after.status == OK


async def test_a_request_with_an_earlier_deadline_than_one_sent_before_ends_at_its_own() -> None:
    ended: dict[str, tuple[str, float]] = {}
    both_ended = asyncio.Event()
    started = time.monotonic()

    def on_done(name: str) -> Callable[[Outcome], None]:
        def record(outcome: Outcome) -> None:
            ended[name] = (outcome.status, time.monotonic() - started)
            if len(ended) == 2:
                both_ended.set()

        return record

    async with grpc_server(delay_s=1.0) as (port, _), h2_client(f"127.0.0.1:{port}") as client:
        client.start("patient", [1], 3, 5.0, on_done("patient"))
        client.start("hasty", [1], 3, 0.1, on_done("hasty"))
        await asyncio.wait_for(both_ended.wait(), 10.0)
    assert ended["hasty"][0] == "DEADLINE_EXCEEDED"
    assert ended["hasty"][1] < 0.6  # not held back behind the patient one's later deadline
    assert ended["patient"][0] == OK


async def test_requests_are_spread_over_every_address_the_target_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with grpc_server() as (port_a, seen_a), grpc_server() as (port_b, seen_b):
        loop = asyncio.get_running_loop()
        resolve = loop.getaddrinfo

        async def two_pods(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
            if host != "inference.etude.svc":  # uvloop resolves a socket's address when connecting it
                return await resolve(host, port, **kwargs)
            # What a headless Service's name resolves to: one address per ready pod.
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_a)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_b)),
            ]

        monkeypatch.setattr(loop, "getaddrinfo", two_pods)
        async with h2_client("inference.etude.svc:50051") as client:
            outcomes = await all_outcomes(client, 20)
    assert {outcome.status for outcome in outcomes} == {OK}
    assert (len(seen_a.requests), len(seen_b.requests)) == (10, 10)


async def test_a_server_that_goes_away_fails_its_requests_fast_and_is_reconnected_when_back() -> None:
    async with grpc_server(delay_s=5.0) as (port, _):
        client = H2RecommendClient(f"127.0.0.1:{port}", request_spans=False)
        await client.connect(5.0)
        in_flight = asyncio.ensure_future(all_outcomes(client, 3, timeout_s=10.0))
        await asyncio.sleep(0.2)
    # The server stopped with three calls in flight: none is left hanging until its deadline.
    try:
        outcomes = await asyncio.wait_for(in_flight, 3.0)
        assert all(outcome.status in ("UNAVAILABLE", "CANCELLED") for outcome in outcomes)
        # Down: requests fail at once, as grpcio's channel does in TRANSIENT_FAILURE.
        started = time.monotonic()
        (down,) = await all_outcomes(client, 1, timeout_s=2.0)
        assert down.status == "UNAVAILABLE" and time.monotonic() - started < 0.5
        async with grpc_server(port=port) as _:
            for _attempt in range(50):
                (back,) = await all_outcomes(client, 1, timeout_s=2.0)
                if back.status == OK:
                    break
                await asyncio.sleep(0.1)
            assert back.status == OK
    finally:
        await client.aclose()


async def test_an_unreachable_target_is_refused_at_connect() -> None:
    client = H2RecommendClient("127.0.0.1:1", request_spans=False)
    with pytest.raises(TargetUnavailable, match=r"127\.0\.0\.1:1"):
        await client.connect(2.0)
    await client.aclose()


async def test_tls_with_the_configured_ca_and_plaintext_refused(pki: Pki) -> None:  # noqa: F811
    credentials = grpc.ssl_server_credentials([(pki.server_key, pki.server_cert)])
    async with grpc_server(credentials=credentials) as (port, seen):
        async with h2_client(f"localhost:{port}", security=ClientSecurity(ca_pem=pki.ca)) as client:
            (outcome,) = await all_outcomes(client, 1)
        assert outcome.status == OK
        plaintext = H2RecommendClient(f"127.0.0.1:{port}", request_spans=False)
        with pytest.raises(TargetUnavailable, match="no HTTP/2 server answered"):
            await plaintext.connect(5.0)
        await plaintext.aclose()
    assert len(seen.requests) == 1


def test_a_target_without_a_port_is_refused() -> None:
    with pytest.raises(ValueError, match="target: expected HOST:PORT"):
        H2RecommendClient("inference")


async def test_a_sampled_request_is_one_trace_from_the_client_span_to_the_server_span(
    recommender: Recommender,  # noqa: F811
) -> None:
    client_side, server_side = in_memory("etude-loadgen", 1.0), in_memory("etude-inference", 0.0)
    async with serving(recommender, server_side, max_batch_delay_ms=0) as (target, _):
        client = H2RecommendClient(target, tracing=client_side.tracing)
        await client.connect(5.0)
        try:

            async def send() -> str:
                INTENDED_SEND_NS.set(time.perf_counter_ns() - 5_000_000)
                return (await client.recommend("session-7", [3, 1, 4], 5, 5.0)).status

            assert await asyncio.create_task(send()) == OK
        finally:
            await client.aclose()
    (client_span,) = client_side.spans(SPAN_NAME)
    (server_span,) = server_side.spans(SERVER_SPAN)
    assert client_span.context is not None and server_span.context is not None
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent is not None and server_span.parent.span_id == client_span.context.span_id
    attributes = dict(client_span.attributes or {})
    assert attributes["rpc.grpc.status_code"] == 0
    assert int(attributes["etude.send_delay_us"]) >= 5_000  # type: ignore[arg-type]
