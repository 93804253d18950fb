"""The three transports (unary Recommend calls through grpcio, the same calls from the load
generator's own HTTP/2 client, one RecommendStream) against a real inference server (noop model)
on port 0: the same requests, the same records, the transport named in the summary."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from etude.services.inference.batcher import DynamicBatcher
from etude.services.inference.recommender import Recommendation, Recommender, RecommenderConfig, SessionQuery
from etude.services.inference.server import RecommenderServicer
from etude.services.loadgen.client import GrpcRecommendClient, open_channel
from etude.services.loadgen.generator import CANCELLED, OK, LoadGenerator, Outcome, Session
from etude.services.loadgen.h2_client import H2RecommendClient
from etude.services.loadgen.server import LoadGeneratorServicer
from etude.services.loadgen.spec import InvalidLoadSpec, validate_load_spec
from etude.services.loadgen.stream_client import GrpcStreamRecommendClient
from etude.services.results.layout import RECORDS_FILE
from etude.services.results.records import read_records as read_record_columns
from loadgen_fakes import sessions_from

from etude import defaults
from etude.serving import ServiceHost, service_full_name
from etude.v1 import loadgen_pb2, loadgen_pb2_grpc, recommender_pb2, recommender_pb2_grpc, workload_pb2

CATALOG_SIZE = 100
Handler = Callable[[list[SessionQuery]], Sequence[Recommendation]]


@pytest.fixture(scope="module")
def recommender() -> Recommender:
    return Recommender(RecommenderConfig("noop", CATALOG_SIZE, seed=1))


@asynccontextmanager
async def inference_server(recommender: Recommender, handler: Handler | None = None) -> AsyncIterator[str]:
    batcher = DynamicBatcher(handler or recommender.recommend_batch, max_batch_delay_ms=1)
    servicer = RecommenderServicer(recommender, batcher)
    host = ServiceHost(
        [service_full_name(recommender_pb2, "RecommenderService")],
        lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server),
    )
    await batcher.start()
    port = await host.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await host.stop(0)
        await batcher.stop(drain=False)


def sessions() -> list[Session]:
    return [
        Session(f"s{index}", [1 + (index * 7 + click) % CATALOG_SIZE for click in range(4)])
        for index in range(40)
    ]


def read_records(folder: Path) -> list[dict[str, str]]:
    """records.csv through the results layer's reader, one dict of text values per request."""
    columns = read_record_columns(folder / RECORDS_FILE)
    names = [field.name for field in dataclasses.fields(columns)]
    return [{name: str(columns.column(name)[index]) for name in names} for index in range(len(columns))]


TRANSPORTS = ["unary", "stream", "h2"]
Client = GrpcRecommendClient | GrpcStreamRecommendClient | H2RecommendClient


@asynccontextmanager
async def client_for(transport: str, target: str, *, connect: bool = True) -> AsyncIterator[Client]:
    """A client of `transport` to `target`, closed on exit (`connect=False`: not connected first)."""
    if transport == "h2":
        h2_client = H2RecommendClient(target)
        try:
            if connect:
                await h2_client.connect(2.0)
            yield h2_client
        finally:
            await h2_client.aclose()
        return
    async with open_channel(target) as channel:
        if transport == "stream":
            stream_client = GrpcStreamRecommendClient(channel)
            try:
                yield stream_client
            finally:
                await stream_client.aclose()
        else:
            yield GrpcRecommendClient(channel)


async def run_with(transport: str, target: str, folder: Path) -> loadgen_pb2.LoadSummary:
    profile = loadgen_pb2.LoadProfile(target_rate_per_s=40.0, ramp_duration_s=1, hold_duration_s=1, k=5)
    async with client_for(transport, target) as client:
        return await LoadGenerator(client, sessions_from(sessions()), profile, records_dir=folder).run()


async def test_every_transport_records_every_request_as_unary_does(
    recommender: Recommender, tmp_path: Path
) -> None:
    summaries, records = {}, {}
    async with inference_server(recommender) as target:
        for transport in TRANSPORTS:
            summaries[transport] = await run_with(transport, target, tmp_path / transport)
            records[transport] = read_records(tmp_path / transport)
    for transport in TRANSPORTS:
        summary, rows = summaries[transport], records[transport]
        assert summary.transport == transport
        assert summary.requests_sent == summary.requests_ok == len(rows) == 80
        assert summary.requests_not_sent == 0
        for row in rows:
            intended, actual, done = (
                int(row[field]) for field in ("intended_send_ns", "actual_send_ns", "completion_ns")
            )
            assert intended <= actual <= done
            assert int(row["latency_from_intended_us"]) == (done - intended) // 1000
            assert int(row["latency_from_actual_us"]) == (done - actual) // 1000
            assert row["status"] == OK
            assert int(row["batch_size"]) >= 1
            assert int(row["server_total_us"]) > 0
        # Per-session order: click j is sent only after click j - 1 answered.
        by_session: dict[str, list[dict[str, str]]] = {}
        for row in sorted(rows, key=lambda row: int(row["actual_send_ns"])):
            by_session.setdefault(row["session_id"], []).append(row)
        for session_rows in by_session.values():
            assert [int(row["click_index"]) for row in session_rows] == list(range(len(session_rows)))
            for earlier, later in itertools.pairwise(session_rows):
                assert int(earlier["completion_ns"]) <= int(later["actual_send_ns"])
    # The same schedule, whichever the transport: 40 requests in each tick.
    for transport in TRANSPORTS:
        assert Counter(row["tick"] for row in records[transport]) == {"0": 40, "1": 40}


async def collect(
    client: Client, requests: list[tuple[str, list[int], int]], timeout_s: float
) -> list[Outcome]:
    """Starts every request at once and returns their outcomes in request order."""
    outcomes: dict[int, Outcome] = {}
    finished = asyncio.Event()

    def done(index: int, outcome: Outcome) -> None:
        outcomes[index] = outcome
        if len(outcomes) == len(requests):
            finished.set()

    for index, (session_id, item_ids, k) in enumerate(requests):
        client.start(session_id, item_ids, k, timeout_s, lambda outcome, index=index: done(index, outcome))
    await asyncio.wait_for(finished.wait(), 5.0)
    return [outcomes[index] for index in range(len(requests))]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_request_fails_alone(recommender: Recommender, transport: str) -> None:
    async with inference_server(recommender) as target, client_for(transport, target) as client:
        outcomes = await collect(client, [("a", [1, 2], 5), ("b", [CATALOG_SIZE + 1], 5), ("c", [3], 5)], 2.0)
    assert [outcome.status for outcome in outcomes] == [OK, "INVALID_ARGUMENT", OK]
    assert outcomes[0].batch_size >= 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_request_past_its_timeout_is_deadline_exceeded(
    recommender: Recommender, transport: str
) -> None:
    def slow(queries: list[SessionQuery]) -> Sequence[Recommendation]:
        time.sleep(0.3)
        return recommender.recommend_batch(queries)

    async with inference_server(recommender, slow) as target, client_for(transport, target) as client:
        started = time.monotonic()
        (outcome,) = await collect(client, [("a", [1], 5)], 0.05)
        waited_s = time.monotonic() - started
        # The late answer (after 0.3 s) is dropped, and the connection still serves the next one.
        await asyncio.sleep(0.4)
        (next_outcome,) = await collect(client, [("b", [2], 5)], 2.0)
    assert outcome.status == "DEADLINE_EXCEEDED"
    assert waited_s < 0.25
    assert next_outcome.status == OK


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unreachable_target_fails_requests_as_unavailable(transport: str) -> None:
    async with client_for(transport, "127.0.0.1:1", connect=False) as client:
        outcomes = await collect(client, [("a", [1], 5), ("b", [1], 5)], 2.0)
    assert [outcome.status for outcome in outcomes] == ["UNAVAILABLE", "UNAVAILABLE"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancelling_a_run_cancels_the_requests_on_either_transport(
    recommender: Recommender, tmp_path: Path, transport: str
) -> None:
    def hanging(queries: list[SessionQuery]) -> Sequence[Recommendation]:
        time.sleep(1.0)
        return recommender.recommend_batch(queries)

    profile = loadgen_pb2.LoadProfile(target_rate_per_s=20.0, hold_duration_s=5, request_timeout_ms=10_000)
    async with inference_server(recommender, hanging) as target, client_for(transport, target) as client:
        generator = LoadGenerator(client, sessions_from(sessions()), profile, records_dir=tmp_path)
        run = asyncio.create_task(generator.run())
        await asyncio.sleep(0.5)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    summary = generator.summary
    assert summary is not None and summary.requests_sent >= 5
    assert summary.errors_by_status[CANCELLED] >= 1
    assert summary.requests_ok + summary.requests_failed == summary.requests_sent
    assert len(read_records(tmp_path)) == summary.requests_sent


async def test_the_summary_reports_the_load_generators_own_footprint(
    recommender: Recommender, tmp_path: Path
) -> None:
    async with inference_server(recommender) as target:
        summary = await run_with("unary", target, tmp_path)
    footprint = summary.footprint
    assert footprint.cpu_s > 0
    assert footprint.cpu_us_per_request == pytest.approx(1e6 * footprint.cpu_s / summary.requests_sent)
    assert footprint.cores_used == pytest.approx(footprint.cpu_s / summary.duration_s)
    assert footprint.core_budget == defaults.LOADGEN_CORE_BUDGET
    assert footprint.over_core_budget == (footprint.cores_used > footprint.core_budget)
    lateness = footprint.send_lateness
    assert lateness.count == summary.requests_sent
    assert 0 < lateness.p50_ms <= lateness.p90_ms <= lateness.p99_ms <= lateness.max_ms
    # Send lateness is part of the latency from the intended send time, never more than it.
    assert lateness.max_ms <= summary.latency_from_intended.max_ms


def test_an_unknown_transport_is_refused_naming_the_field() -> None:
    spec = loadgen_pb2.LoadSpec(
        target="127.0.0.1:1",
        profile=loadgen_pb2.LoadProfile(target_rate_per_s=1.0, hold_duration_s=1),
        workload_endpoint="127.0.0.1:2",
        transport="carrier-pigeon",
    )
    with pytest.raises(InvalidLoadSpec, match="transport: must be one of unary, stream, h2") as raised:
        validate_load_spec(spec)
    assert raised.value.field == "transport"


@pytest.mark.parametrize("transport", ["stream", "h2"])
async def test_the_loadgen_service_runs_the_chosen_transport_and_says_so(
    recommender: Recommender, transport: str
) -> None:
    async def in_process(spec: workload_pb2.WorkloadSpec) -> AsyncIterator[Session]:
        for index in itertools.count():
            yield Session(f"local-{index}", [7, 8])

    servicer = LoadGeneratorServicer(connect_timeout_s=2.0, in_process_source=in_process)  # type: ignore[arg-type]
    loadgen = ServiceHost(
        [service_full_name(loadgen_pb2, "LoadGeneratorService")],
        lambda server: loadgen_pb2_grpc.add_LoadGeneratorServiceServicer_to_server(servicer, server),
    )
    async with inference_server(recommender) as target:
        port = await loadgen.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                spec = loadgen_pb2.LoadSpec(
                    target=target,
                    profile=loadgen_pb2.LoadProfile(target_rate_per_s=20.0, hold_duration_s=1, k=3),
                    workload=workload_pb2.WorkloadSpec(
                        catalog_size=CATALOG_SIZE,
                        exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.5),
                    ),
                    transport=transport,
                )
                updates = [
                    update async for update in loadgen_pb2_grpc.LoadGeneratorServiceStub(channel).Run(spec)
                ]
        finally:
            await loadgen.stop(0)
    summary = updates[-1].summary
    assert summary.transport == transport
    assert summary.requests_ok == summary.requests_sent == 20
    assert summary.footprint.send_lateness.count == 20
