"""The gRPC side of the load generator: the unary RecommendClient over one grpc.aio channel.

Every RPC failure comes back as an Outcome carrying the status name; nothing here raises for
an unreachable, slow or refusing server, so the generator counts failures instead of dying.
The client takes each request's sampling decision (etude.telemetry): a sampled request gets a
client span from its intended send time to its answer; any other one only a traceparent string
with the sampled flag clear, so that the server follows the decision instead of drawing its own.

The hot path (`start`) costs the least grpc.aio allows: the request is serialised once by us and
sent through a bytes-in, bytes-out callable, and the answer is read in a done callback on the
call instead of in a task of our own. (The streaming transport lives in stream_client.py.)
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from functools import partial
from typing import Any

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from etude import security
from etude.serving import MAX_MESSAGE_BYTES
from etude.telemetry import TRACEPARENT, RequestTracing, request_tracing, unsampled_traceparent
from etude.v1 import recommender_pb2, recommender_pb2_grpc

from .generator import CANCELLED, CLIENT_ERROR, INTENDED_SEND_NS, OK, OnDone, Outcome

_log = structlog.get_logger()

RPC_SERVICE = "etude.v1.RecommenderService"
RPC_METHOD = "Recommend"
# OpenTelemetry RPC semantic conventions: span name "{rpc.service}/{rpc.method}".
SPAN_NAME = f"{RPC_SERVICE}/{RPC_METHOD}"
RECOMMEND_PATH = f"/{RPC_SERVICE}/{RPC_METHOD}"
TRANSPORT_UNARY = "unary"

# Status names by the integer code grpc's core reports (the same as StatusCode.value[0]).
STATUS_NAMES: dict[int, str] = {code.value[0]: code.name for code in grpc.StatusCode}
_CANCELLED_OUTCOME = Outcome(CANCELLED)
_CLIENT_ERROR_OUTCOME = Outcome(CLIENT_ERROR)

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
    """A channel to `target` (host:port) with Etude's message size limits, over TLS when this
    process is configured with a CA (`--tls-ca`), plaintext otherwise."""
    channel = security.open_channel(target, options=CHANNEL_OPTIONS)
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


def encode_request(
    session_id: str,
    item_ids: Sequence[int],
    k: int,
    request_id: int = 0,
    candidate_ids: Sequence[int] = (),
    timeout_ms: int = 0,
) -> bytes:
    """The serialised RecommendRequest (with candidate_ids: a re-ranking request)."""
    request = recommender_pb2.RecommendRequest(session_id=session_id, item_ids=item_ids, k=k)
    # Set only when not the default: each keyword costs the constructor time on every request.
    if request_id:
        request.request_id = request_id
    if candidate_ids:
        request.candidate_ids.extend(candidate_ids)
    if timeout_ms:
        request.timeout_ms = timeout_ms
    return request.SerializeToString()


class GrpcRecommendClient:
    """Calls etude.v1.RecommenderService/Recommend with the request's timeout as its deadline.

    `request_spans=False` switches tracing off for this client; `tracing` None takes the
    process's (`etude.telemetry.request_tracing()`, None when tracing is off).
    """

    transport = TRANSPORT_UNARY

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        request_spans: bool = True,
        tracing: RequestTracing | None = None,
        target: str = "",
    ) -> None:
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        # Bytes in, bytes out: no serializer hooks, and a call registered once with the core.
        self._recommend_bytes = channel.unary_unary(
            RECOMMEND_PATH, request_serializer=None, response_deserializer=None, _registered_method=True
        )
        self._calls: set[grpc.aio.UnaryUnaryCall[Any, Any]] = set()
        self._traced_tasks: set[asyncio.Task[Outcome]] = set()
        self._tracing = (tracing if tracing is not None else request_tracing()) if request_spans else None
        self._tracer = self._tracing.tracer(__name__) if self._tracing is not None else None
        self._span_attributes = _rpc_attributes(target or _channel_targets.get(channel, ""))

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int] = (),
    ) -> None:
        """Sends the request and returns; `on_done` gets its Outcome when it ends."""
        metadata = self._metadata()
        if metadata is None:
            request = recommender_pb2.RecommendRequest(
                session_id=session_id, item_ids=item_ids, k=k, candidate_ids=candidate_ids
            )
            task = asyncio.ensure_future(self._traced(request, timeout_s))
            self._traced_tasks.add(task)
            task.add_done_callback(partial(self._traced_done, on_done))
            return
        call = self._recommend_bytes(
            encode_request(session_id, item_ids, k, 0, candidate_ids), timeout=timeout_s, metadata=metadata
        )
        self._calls.add(call)
        # grpc.aio runs each call as a task of its own (grpcio 1.85: `_invocation_task`); its
        # done callback fires once the answer is read, without another task of ours.
        call._invocation_task.add_done_callback(partial(self._call_done, call, on_done))  # type: ignore[attr-defined]

    def _call_done(
        self, call: grpc.aio.UnaryUnaryCall[Any, Any], on_done: OnDone, task: asyncio.Task[Any]
    ) -> None:
        self._calls.discard(call)
        if task.cancelled() or call.cancelled():
            on_done(_CANCELLED_OUTCOME)
            return
        try:
            response = task.result()
            if isinstance(response, bytes):
                outcome = _outcome_of_bytes(response)
            else:
                # No message (grpc's EOF): the call ended with a status other than OK, which
                # grpc.aio keeps on its cython call; reading it here saves awaiting `code()`.
                outcome = Outcome(STATUS_NAMES.get(call._cython_call._status.code(), "UNKNOWN"))  # type: ignore[attr-defined]
        except Exception:
            _log_client_error()
            outcome = _CLIENT_ERROR_OUTCOME
        on_done(outcome)

    def _traced_done(self, on_done: OnDone, task: asyncio.Task[Outcome]) -> None:
        self._traced_tasks.discard(task)
        if task.cancelled():
            on_done(_CANCELLED_OUTCOME)
        elif task.exception() is not None:
            _log_client_error()
            on_done(_CLIENT_ERROR_OUTCOME)
        else:
            on_done(task.result())

    def cancel_all(self) -> None:
        """Cancels every request in flight; each reports CANCELLED."""
        for call in list(self._calls):
            call.cancel()
        for task in list(self._traced_tasks):
            task.cancel()

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The request's metadata, or None when the request is sampled (it gets a span)."""
        if self._tracing is None:
            return ()
        parent = trace.get_current_span().get_span_context()
        # A caller's own trace decides for it; otherwise this is the request's root.
        sampled = parent.trace_flags.sampled if parent.is_valid else self._tracing.sample_root()
        if sampled:
            return None
        return _propagated() if parent.is_valid else ((TRACEPARENT, unsampled_traceparent()),)

    async def recommend(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        candidate_ids: Sequence[int] = (),
    ) -> Outcome:
        metadata = self._metadata()
        if metadata is None:
            request = recommender_pb2.RecommendRequest(
                session_id=session_id, item_ids=item_ids, k=k, candidate_ids=candidate_ids
            )
            return await self._traced(request, timeout_s)
        try:
            response = await self._recommend_bytes(
                encode_request(session_id, item_ids, k, 0, candidate_ids),
                timeout=timeout_s,
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            return Outcome(error.code().name)
        return _outcome_of_bytes(response)

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
            return outcome_of(response)
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


def _log_client_error() -> None:
    _log.exception("recommend_client_raised")


def _outcome_of_bytes(response: bytes | bytearray, sent_ns: int = 0, received_ns: int = 0) -> Outcome:
    return outcome_of(recommender_pb2.RecommendResponse.FromString(response), sent_ns, received_ns)


def outcome_of(
    response: recommender_pb2.RecommendResponse, sent_ns: int = 0, received_ns: int = 0
) -> Outcome:
    timing = response.timing
    return Outcome(
        OK,
        timing.queue_us,
        timing.inference_us,
        timing.batch_size,
        timing.server_total_us,
        timing.shard_fanout_us,
        timing.shard_compute_us,
        timing.shard_wire_bytes,
        sent_ns,
        received_ns,
    )
