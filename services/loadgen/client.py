"""The gRPC side of the load generator: RecommendClient over one grpc.aio channel.

Every RPC failure comes back as an Outcome carrying the status name; nothing here raises for
an unreachable, slow or refusing server, so the generator counts failures instead of dying.
The client takes each request's sampling decision (etude.telemetry): a sampled request gets a
client span from its intended send time to its answer; any other one only a traceparent string
with the sampled flag clear, so that the server follows the decision instead of drawing its own.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from etude.serving import MAX_MESSAGE_BYTES
from etude.telemetry import TRACEPARENT, RequestTracing, request_tracing, unsampled_traceparent
from etude.v1 import recommender_pb2, recommender_pb2_grpc

from .generator import INTENDED_SEND_NS, OK, Outcome

RPC_SERVICE = "etude.v1.RecommenderService"
RPC_METHOD = "Recommend"
# OpenTelemetry RPC semantic conventions: span name "{rpc.service}/{rpc.method}".
SPAN_NAME = f"{RPC_SERVICE}/{RPC_METHOD}"

# The target each channel of open_channel was opened for (server.address/port of client spans).
_channel_targets: weakref.WeakKeyDictionary[grpc.aio.Channel, str] = weakref.WeakKeyDictionary()

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A headless Service resolves to every ready inference pod: spread the calls over all of
    # them (gRPC's default, pick_first, would send every request to one replica).
    ("grpc.lb_policy_name", "round_robin"),
]


class TargetUnavailable(ConnectionError):
    """The RecommenderService under test did not become reachable in time."""


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to `target` (host:port) with Etude's message size limits."""
    channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    _channel_targets[channel] = target
    return channel


async def wait_until_ready(channel: grpc.aio.Channel, target: str, timeout_s: float) -> None:
    """Connects before the run starts, so a wrong target fails fast instead of as 100% errors."""
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except TimeoutError as error:
        raise TargetUnavailable(
            f"target: no server reachable at {target!r} within {timeout_s:g} s"
        ) from error


class GrpcRecommendClient:
    """Calls etude.v1.RecommenderService/Recommend with the request's timeout as its deadline.

    `request_spans=False` switches tracing off for this client; `tracing` None takes the
    process's (`etude.telemetry.request_tracing()`, None when tracing is off).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        request_spans: bool = True,
        tracing: RequestTracing | None = None,
        target: str = "",
    ) -> None:
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        self._tracing = (tracing if tracing is not None else request_tracing()) if request_spans else None
        self._tracer = self._tracing.tracer(__name__) if self._tracing is not None else None
        self._span_attributes = _rpc_attributes(target or _channel_targets.get(channel, ""))

    async def recommend(self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float) -> Outcome:
        request = recommender_pb2.RecommendRequest(session_id=session_id, item_ids=item_ids, k=k)
        metadata: tuple[tuple[str, str], ...] = ()
        if self._tracing is not None:
            parent = trace.get_current_span().get_span_context()
            # A caller's own trace decides for it; otherwise this is the request's root.
            sampled = parent.trace_flags.sampled if parent.is_valid else self._tracing.sample_root()
            if sampled:
                return await self._traced(request, timeout_s)
            metadata = _propagated() if parent.is_valid else ((TRACEPARENT, unsampled_traceparent()),)
        try:
            response = await self._stub.Recommend(request, timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            return Outcome(error.code().name)
        return _outcome_of(response)

    async def _traced(self, request: recommender_pb2.RecommendRequest, timeout_s: float) -> Outcome:
        """The call inside a client span that starts at the request's intended send time."""
        assert self._tracer is not None
        actual_ns = time.perf_counter_ns()
        to_epoch_ns = time.time_ns() - actual_ns
        intended_ns = INTENDED_SEND_NS.get(actual_ns)
        attributes: dict[str, AttributeValue] = {
            **self._span_attributes,
            "etude.session_id": request.session_id,
            "etude.click_index": len(request.item_ids) - 1,
            # The generator's clock, so that a span joins its row of records.csv exactly.
            "etude.intended_send_ns": intended_ns,
            "etude.send_delay_us": (actual_ns - intended_ns) // 1000,
        }
        span = self._tracer.start_span(
            SPAN_NAME, kind=trace.SpanKind.CLIENT, start_time=intended_ns + to_epoch_ns, attributes=attributes
        )
        span.add_event("etude.sent", timestamp=actual_ns + to_epoch_ns)
        status = grpc.StatusCode.UNKNOWN
        try:
            # The trace context crosses the wire in the metadata (W3C traceparent).
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            try:
                response = await self._stub.Recommend(
                    request, timeout=timeout_s, metadata=tuple(carrier.items())
                )
            except grpc.aio.AioRpcError as error:
                status = error.code()
                span.set_status(trace.StatusCode.ERROR, f"{status.name}: {error.details()}")
                return Outcome(status.name)
            status = grpc.StatusCode.OK
            return _outcome_of(response)
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED
            span.set_status(trace.StatusCode.ERROR, "CANCELLED")
            raise
        finally:
            span.set_attribute("rpc.grpc.status_code", status.value[0])
            span.end(end_time=time.perf_counter_ns() + to_epoch_ns)


def _propagated() -> tuple[tuple[str, str], ...]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=otel_context.get_current())
    return tuple(carrier.items())


def _rpc_attributes(target: str) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "rpc.system": "grpc",
        "rpc.service": RPC_SERVICE,
        "rpc.method": RPC_METHOD,
    }
    host, separator, port = target.rpartition(":")
    if separator and port.isdigit():
        attributes["server.address"] = host.strip("[]")
        attributes["server.port"] = int(port)
    elif target:
        attributes["server.address"] = target
    return attributes


def _outcome_of(response: recommender_pb2.RecommendResponse) -> Outcome:
    timing = response.timing
    return Outcome(
        OK,
        queue_us=timing.queue_us,
        inference_us=timing.inference_us,
        batch_size=timing.batch_size,
        server_total_us=timing.server_total_us,
    )
