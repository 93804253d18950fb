"""The gRPC side of the load generator: RecommendClient over one grpc.aio channel.

Every RPC failure comes back as an Outcome carrying the status name; nothing here raises for
an unreachable, slow or refusing server, so the generator counts failures instead of dying.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from opentelemetry import propagate, trace

from etude.serving import MAX_MESSAGE_BYTES
from etude.v1 import recommender_pb2, recommender_pb2_grpc
from services.loadgen.generator import OK, Outcome

_tracer = trace.get_tracer(__name__)

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class TargetUnavailable(ConnectionError):
    """The RecommenderService under test did not become reachable in time."""


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to `target` (host:port) with Etude's message size limits."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


async def wait_until_ready(channel: grpc.aio.Channel, target: str, timeout_s: float) -> None:
    """Connects before the run starts, so a wrong target fails fast instead of as 100% errors."""
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except TimeoutError as error:
        raise TargetUnavailable(
            f"target: no server reachable at {target!r} within {timeout_s:g} s"
        ) from error


class GrpcRecommendClient:
    """Calls etude.v1.RecommenderService/Recommend with the request's timeout as its deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, request_spans: bool = True) -> None:
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        # A client span per request costs ~0.1 ms of CPU with the SDK installed; at thousands
        # of requests per second that is worth switching off when nobody reads the traces.
        self._request_spans = request_spans

    async def recommend(self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float) -> Outcome:
        request = recommender_pb2.RecommendRequest(session_id=session_id, item_ids=item_ids, k=k)
        if not self._request_spans:
            try:
                response = await self._stub.Recommend(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                return Outcome(error.code().name)
            return _outcome_of(response)
        with _tracer.start_as_current_span(
            "etude.v1.RecommenderService/Recommend", kind=trace.SpanKind.CLIENT
        ) as span:
            # The trace context crosses the wire in the metadata (W3C traceparent).
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            try:
                response = await self._stub.Recommend(
                    request, timeout=timeout_s, metadata=tuple(carrier.items())
                )
            except grpc.aio.AioRpcError as error:
                status = error.code().name
                span.set_attribute("rpc.grpc.status_code", error.code().value[0])
                return Outcome(status)
        return _outcome_of(response)


def _outcome_of(response: recommender_pb2.RecommendResponse) -> Outcome:
    timing = response.timing
    return Outcome(
        OK,
        queue_us=timing.queue_us,
        inference_us=timing.inference_us,
        batch_size=timing.batch_size,
        server_total_us=timing.server_total_us,
    )
