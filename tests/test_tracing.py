"""OpenTelemetry traces of a request: client span, server span, queue/model children, batch span.

Client and server each get their own SDK provider with an in-memory exporter (as two processes
would), wired through a real gRPC server on an ephemeral port.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import structlog
from etude.services.inference import server as inference_server
from etude.services.inference.batcher import BATCH_SPAN, DynamicBatcher
from etude.services.inference.models.base import MAX_SESSION_LENGTH
from etude.services.inference.recommender import Recommendation, Recommender, RecommenderConfig, SessionQuery
from etude.services.inference.server import (
    MODEL_SPAN,
    QUEUED_SPAN,
    RPC_SERVICE,
    RecommenderServicer,
    batch_span_attributes,
)
from etude.services.loadgen.client import SPAN_NAME, GrpcRecommendClient
from etude.services.loadgen.generator import INTENDED_SEND_NS, OK
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from etude import telemetry
from etude.logs import configure_logging
from etude.serving import ServiceHost, service_full_name
from etude.telemetry import RequestTracing, build_tracer_provider
from etude.v1 import recommender_pb2, recommender_pb2_grpc

CATALOG_SIZE = 100
SERVICE = service_full_name(recommender_pb2, "RecommenderService")


@dataclass
class Tracing:
    """One process's tracing: what its code is given and what it exported."""

    tracing: RequestTracing
    exporter: InMemorySpanExporter

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if name is None or span.name == name]


def in_memory(service: str, ratio: float) -> Tracing:
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider(service, [exporter], batch=False)
    return Tracing(RequestTracing(provider, ratio), exporter)


@pytest.fixture(scope="module")
def recommender() -> Recommender:
    return Recommender(RecommenderConfig("noop", CATALOG_SIZE, seed=1))


@asynccontextmanager
async def serving(
    recommender: Recommender,
    server_tracing: Tracing | None,
    handler: Callable[[list[SessionQuery]], Sequence[Recommendation]] | None = None,
    **batching: float,
) -> AsyncIterator[tuple[str, grpc.aio.Channel]]:
    batcher = DynamicBatcher(
        handler or recommender.recommend_batch,
        tracer=server_tracing.tracing.tracer("batcher") if server_tracing else None,
        batch_attributes=batch_span_attributes(recommender),
        **batching,  # type: ignore[arg-type]
    )
    servicer = RecommenderServicer(recommender, batcher, server_tracing.tracing if server_tracing else None)
    host = ServiceHost(
        [SERVICE],
        lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server),
    )
    await batcher.start()
    port = await host.start()
    target = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            yield target, channel
    finally:
        await host.stop(0)
        await batcher.stop(drain=False)


def children_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    assert span.context is not None
    return {
        child.name: child
        for child in spans
        if child.parent is not None and child.parent.span_id == span.context.span_id
    }


async def test_sampled_request_is_one_trace_from_client_span_to_model_span(recommender: Recommender) -> None:
    client_side, server_side = in_memory("etude-loadgen", 1.0), in_memory("etude-inference", 0.0)
    async with serving(recommender, server_side, max_batch_delay_ms=0) as (target, channel):
        client = GrpcRecommendClient(channel, tracing=client_side.tracing, target=target)

        async def send() -> str:
            # The generator's schedule says this request was due 5 ms ago.
            INTENDED_SEND_NS.set(time.perf_counter_ns() - 5_000_000)
            return (await client.recommend("session-7", [3, 1, 4], 5, 5.0)).status

        assert await asyncio.create_task(send()) == OK

    (client_span,) = client_side.spans(SPAN_NAME)
    assert client_span.kind == trace.SpanKind.CLIENT
    attributes = dict(client_span.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == RPC_SERVICE
    assert attributes["rpc.method"] == "Recommend"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == int(target.rsplit(":", 1)[1])
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["etude.session_id"] == "session-7"
    assert attributes["etude.click_index"] == 2
    # The span starts at the intended send time; the gap to the actual send is recorded.
    assert int(attributes["etude.send_delay_us"]) >= 5_000  # type: ignore[arg-type]
    (sent,) = [event for event in client_span.events if event.name == "etude.sent"]
    assert client_span.start_time is not None and client_span.end_time is not None
    assert sent.timestamp - client_span.start_time >= 5_000_000

    (server_span,) = server_side.spans(f"{RPC_SERVICE}/Recommend")
    assert server_span.kind == trace.SpanKind.SERVER
    assert server_span.context is not None and client_span.context is not None
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent is not None and server_span.parent.span_id == client_span.context.span_id
    assert server_span.parent.is_remote
    assert dict(server_span.attributes or {})["rpc.grpc.status_code"] == 0
    children = children_of(server_span, server_side.spans())
    assert set(children) == {QUEUED_SPAN, MODEL_SPAN}

    (batch_span,) = server_side.spans(BATCH_SPAN)
    assert batch_span.parent is None  # a trace of its own ...
    assert [link.context.span_id for link in batch_span.links] == [server_span.context.span_id]  # ... linked
    batch_attributes = dict(batch_span.attributes or {})
    assert batch_attributes["etude.batch_size"] == 1
    assert batch_attributes["etude.padded_length"] == MAX_SESSION_LENGTH
    assert batch_attributes["etude.longest_session"] == 3
    assert batch_attributes["etude.device"] == "cpu"
    assert batch_attributes["etude.runtime"] == "eager"
    assert batch_attributes["etude.model"] == "noop"
    # The request's model span points back at the batch it ran in.
    assert batch_span.context is not None
    assert [link.context.span_id for link in children[MODEL_SPAN].links] == [batch_span.context.span_id]


async def test_queue_and_inference_never_exceed_the_server_span(recommender: Recommender) -> None:
    client_side, server_side = in_memory("etude-loadgen", 1.0), in_memory("etude-inference", 0.0)
    async with serving(recommender, server_side, max_batch_delay_ms=2, max_batch_size=8) as (_, channel):
        client = GrpcRecommendClient(channel, tracing=client_side.tracing)
        rng = random.Random(3)
        outcomes = await asyncio.gather(
            *(
                client.recommend(f"s{i}", [rng.randint(1, CATALOG_SIZE) for _ in range(1 + i % 7)], 3, 5.0)
                for i in range(60)
            )
        )
    assert {outcome.status for outcome in outcomes} == {OK}
    spans = server_side.spans()
    servers = [span for span in spans if span.kind == trace.SpanKind.SERVER]
    assert len(servers) == 60
    for server_span in servers:
        children = children_of(server_span, spans)
        queued, model = children[QUEUED_SPAN], children[MODEL_SPAN]
        for child in (queued, model):
            assert server_span.start_time <= child.start_time <= child.end_time <= server_span.end_time  # type: ignore[operator]
        assert queued.end_time <= model.start_time  # type: ignore[operator]
        queue_ns = queued.end_time - queued.start_time  # type: ignore[operator]
        model_ns = model.end_time - model.start_time  # type: ignore[operator]
        assert queue_ns + model_ns <= server_span.end_time - server_span.start_time  # type: ignore[operator]
    # Every request is linked from exactly one batch, and batches were formed (8 at most).
    batches = server_side.spans(BATCH_SPAN)
    linked = [link.context.span_id for batch in batches for link in batch.links]
    assert sorted(linked) == sorted(span.context.span_id for span in servers)  # type: ignore[union-attr]
    assert all(1 <= int(dict(batch.attributes or {})["etude.batch_size"]) <= 8 for batch in batches)  # type: ignore[arg-type]


async def test_batch_span_links_only_the_traced_requests_it_served() -> None:
    tracing = in_memory("etude-inference", 1.0)
    tracer = tracing.tracing.tracer("test")
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        lambda requests: [r * 2 for r in requests],
        max_batch_size=4,
        max_batch_delay_ms=1_000,
        tracer=tracer,
        batch_attributes=lambda requests: {"etude.longest_session": max(requests)},
    )
    await batcher.start()
    request_spans = [tracer.start_span(f"request-{i}") for i in range(3)]
    try:
        results = await asyncio.gather(
            *(
                batcher.submit(i, span_context=span.get_span_context())
                for i, span in enumerate(request_spans)
            ),
            batcher.submit(10),  # not traced
        )
    finally:
        await batcher.stop()
    (batch_span,) = tracing.spans(BATCH_SPAN)
    assert [link.context for link in batch_span.links] == [span.get_span_context() for span in request_spans]
    attributes = dict(batch_span.attributes or {})
    assert attributes["etude.batch_size"] == 4
    assert attributes["etude.traced_requests"] == 3
    assert attributes["etude.longest_session"] == 10
    assert all(r.batch_span_context == batch_span.context for r in results)


async def test_a_batch_without_traced_requests_builds_no_span() -> None:
    tracing = in_memory("etude-inference", 1.0)
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        lambda requests: requests, max_batch_delay_ms=0, tracer=tracing.tracing.tracer("test")
    )
    await batcher.start()
    try:
        result = await batcher.submit(1)
    finally:
        await batcher.stop()
    assert result.batch_span_context is None
    assert tracing.spans() == []


async def test_unsampled_requests_build_no_spans_and_the_server_follows_the_caller(
    recommender: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server would trace every request that came without a decision (ratio 1.0) ...
    client_side, server_side = in_memory("etude-loadgen", 0.0), in_memory("etude-inference", 1.0)
    seen_traceparents: list[str] = []
    original = inference_server.RecommenderServicer._trace_parent

    def spy(self: RecommenderServicer, context: grpc.aio.ServicerContext | None) -> Context | None:
        if context is not None:
            seen_traceparents.extend(v for k, v in context.invocation_metadata() or () if k == "traceparent")
        return original(self, context)

    async with serving(recommender, server_side, max_batch_delay_ms=0) as (_, channel):
        monkeypatch.setattr(inference_server.RecommenderServicer, "_trace_parent", spy)
        client = GrpcRecommendClient(channel, tracing=client_side.tracing)
        outcomes = [await client.recommend("s", [1, 2], 3, 5.0) for _ in range(20)]
    assert {outcome.status for outcome in outcomes} == {OK}
    # ... but the client's "not sampled" crossed the wire, and neither side built a span.
    assert len(seen_traceparents) == 20
    assert all(telemetry.traceparent_sampled(value) is False for value in seen_traceparents)
    assert client_side.spans() == []
    assert server_side.spans() == []


async def test_without_tracing_nothing_is_traced_or_propagated(recommender: Recommender) -> None:
    async with serving(recommender, None, max_batch_delay_ms=0) as (_, channel):
        client = GrpcRecommendClient(channel, request_spans=False)
        assert (await client.recommend("s", [1], 3, 5.0)).status == OK


async def test_a_callers_w3c_trace_context_continues_into_the_inference_spans(
    recommender: Recommender,
) -> None:
    server_side = in_memory("etude-inference", 0.0)
    trace_id, parent_span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    traceparent = f"00-{trace_id:032x}-{parent_span_id:016x}-01"
    async with serving(recommender, server_side, max_batch_delay_ms=0) as (_, channel):
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        await stub.Recommend(
            recommender_pb2.RecommendRequest(session_id="x", item_ids=[5], k=2),
            metadata=(("traceparent", traceparent), ("tracestate", "vendor=1")),
        )
    (server_span,) = server_side.spans(f"{RPC_SERVICE}/Recommend")
    assert server_span.context is not None and server_span.parent is not None
    assert server_span.context.trace_id == trace_id
    assert server_span.parent.span_id == parent_span_id
    assert server_span.context.trace_state.get("vendor") == "1"
    assert {span.context.trace_id for span in server_side.spans() if span.name != BATCH_SPAN} == {trace_id}  # type: ignore[union-attr]


async def test_a_refused_request_records_its_status_and_its_log_lines_carry_its_ids(
    recommender: Recommender, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_model(queries: list[SessionQuery]) -> list[Recommendation]:
        structlog.get_logger().info("model_called")  # in the model thread, inside the batch span
        raise RuntimeError("weights missing")

    configure_logging("etude-inference", "json")
    # The module's logger may have been bound to an earlier configuration: take a fresh one.
    monkeypatch.setattr(inference_server, "_log", structlog.get_logger())
    client_side, server_side = in_memory("etude-loadgen", 1.0), in_memory("etude-inference", 0.0)
    async with serving(recommender, server_side, broken_model, max_batch_delay_ms=0) as (_, channel):
        client = GrpcRecommendClient(channel, tracing=client_side.tracing)
        assert (await client.recommend("s", [1], 3, 5.0)).status == "INTERNAL"
        assert (await client.recommend("s", [CATALOG_SIZE + 1], 3, 5.0)).status == "INVALID_ARGUMENT"

    internal, invalid = server_side.spans(f"{RPC_SERVICE}/Recommend")
    assert dict(internal.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert internal.status.status_code == trace.StatusCode.ERROR
    assert dict(invalid.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    client_codes = [dict(span.attributes or {})["rpc.grpc.status_code"] for span in client_side.spans()]
    assert client_codes == [grpc.StatusCode.INTERNAL.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0]]

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (failed,) = [line for line in lines if line["event"] == "recommend_failed"]
    assert internal.context is not None
    assert failed["trace_id"] == f"{internal.context.trace_id:032x}"
    assert failed["span_id"] == f"{internal.context.span_id:016x}"
    (model_called,) = [line for line in lines if line["event"] == "model_called"]
    (batch_span,) = server_side.spans(BATCH_SPAN)
    assert batch_span.context is not None
    assert model_called["span_id"] == f"{batch_span.context.span_id:016x}"


@pytest.mark.parametrize(
    ("environ", "to_file", "ratio"),
    [
        ({}, True, telemetry.DEFAULT_TRACE_SAMPLE_RATIO),
        ({}, False, 1.0),
        ({"ETUDE_TRACE_SAMPLE_RATIO": "0.25"}, True, 0.25),
        ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, True, 0.5),
        ({"OTEL_TRACES_SAMPLER": "traceidratio"}, True, 1.0),
        ({"OTEL_TRACES_SAMPLER": "always_off", "ETUDE_TRACE_SAMPLE_RATIO": "0.5"}, True, 0.0),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, True, 1.0),
    ],
)
def test_root_sample_ratio_follows_the_standard_otel_variables(
    environ: dict[str, str], to_file: bool, ratio: float
) -> None:
    assert telemetry.root_sample_ratio(environ, recording_to_file=to_file) == ratio


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_a_sample_ratio_outside_0_1_is_refused_with_its_name(value: str) -> None:
    with pytest.raises(ValueError, match="ETUDE_TRACE_SAMPLE_RATIO"):
        telemetry.root_sample_ratio({"ETUDE_TRACE_SAMPLE_RATIO": value}, recording_to_file=True)


def test_an_unsampled_traceparent_is_valid_w3c_context_with_the_sampled_flag_clear() -> None:
    value = telemetry.unsampled_traceparent()
    assert telemetry.traceparent_sampled(value) is False
    span_context = trace.get_current_span(propagate.extract({"traceparent": value})).get_span_context()
    assert span_context.is_valid and not span_context.trace_flags.sampled
    assert telemetry.traceparent_sampled(value[:-2] + "01") is True
    assert telemetry.traceparent_sampled("00-garbage") is None


async def test_otlp_json_lines_file_holds_hex_ids_the_controller_reads_back(
    recommender: Recommender, tmp_path: Path
) -> None:
    from etude.services.report.traces import parse_spans, traced_requests

    client_file, server_file = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    client_provider = build_tracer_provider("etude-loadgen", [telemetry.OtlpJsonLinesExporter(client_file)])
    server_provider = build_tracer_provider("etude-inference", [telemetry.OtlpJsonLinesExporter(server_file)])
    server_side = Tracing(RequestTracing(server_provider, 0.0), InMemorySpanExporter())
    async with serving(recommender, server_side, max_batch_delay_ms=0) as (_, channel):
        client = GrpcRecommendClient(channel, tracing=RequestTracing(client_provider, 1.0))
        for click in range(3):
            assert (await client.recommend("s1", [1, 2, 3][: click + 1], 3, 5.0)).status == OK
    client_provider.shutdown()  # flushes the batch processors, as process exit does
    server_provider.shutdown()

    first = json.loads(server_file.read_text().splitlines()[0])
    resource = first["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "etude-inference"}} in resource
    span = first["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
    assert len(span["spanId"]) == 16 and int(span["spanId"], 16)

    spans = [*parse_spans(client_file.read_text())[0], *parse_spans(server_file.read_text())[0]]
    requests = sorted(traced_requests(spans), key=lambda request: request.click_index)
    assert [(r.session_id, r.click_index, r.ok) for r in requests] == [
        ("s1", 0, True),
        ("s1", 1, True),
        ("s1", 2, True),
    ]
