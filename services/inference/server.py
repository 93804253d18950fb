"""The RecommenderService servicer: adapts the recommender core and its batcher to gRPC.

Validation runs on the event loop (cheap), the model in the batcher's thread. The core's
exceptions become status codes in one place, `_status_for`. A request the caller's traceparent
marks as sampled (or, without one, that the root ratio draws) gets a server span with child
spans for its time queued and in the model; any other request builds no span at all.

A RecommendStream holds at most `max_stream_in_flight` requests (read, not yet answered on the
wire); at the bound the servicer stops reading the stream until an answer has been written. Flow
control rather than refusing the excess: a refusal is itself an answer to hold, so only not
reading bounds the memory of a client that sends without reading its answers; overload is still
refused per request by the batcher's queue bounds, well before this one, which a single stream
reaches only when its answers are not read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from etude.limits import MAX_REQUEST_TIMEOUT_MS
from etude.provenance import current_environment
from etude.telemetry import TRACEPARENT, RequestTracing, request_tracing, traceparent_sampled
from etude.v1 import environment_pb2, recommender_pb2, recommender_pb2_grpc

from . import metrics
from .accuracy import AccuracyReport
from .batcher import (
    Batched,
    BatcherStopped,
    DeadlineExpired,
    DynamicBatcher,
    QueueFull,
    QueueWaitTooLong,
    WouldMissDeadline,
)
from .memory import MemoryReading, own_memory, server_memory
from .models.base import MAX_SESSION_LENGTH
from .recommender import (
    InvalidRequest,
    Recommendation,
    Recommender,
    SessionQuery,
)
from .router import RoutedRecommendation, RoutedRecommender
from .shard_client import ShardError, ShardUnavailable

_log = structlog.get_logger()

InferenceBatcher = DynamicBatcher[SessionQuery, Recommendation]

# OpenTelemetry RPC semantic conventions: span name "{rpc.service}/{rpc.method}".
RPC_SERVICE = "etude.v1.RecommenderService"
QUEUED_SPAN = "inference.queued"
MODEL_SPAN = "inference.model"


class _Refused(Exception):
    """A request answered with a non-OK status (mapped by `_status_for` inside its span)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# The refusal reasons counted by metrics.REFUSALS; anything else is "internal". Subclasses first.
_REFUSAL_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (InvalidRequest, "invalid_argument"),
    (WouldMissDeadline, "would_miss_deadline"),
    (QueueWaitTooLong, "queue_wait_too_long"),
    (QueueFull, "queue_full"),
    (DeadlineExpired, "deadline_expired"),
    (BatcherStopped, "shutting_down"),
)


def _refusal(error: Exception) -> _Refused:
    """A failed request's status, counted by reason in the service's metrics."""
    metrics.refused(
        next((reason for kind, reason in _REFUSAL_REASONS if isinstance(error, kind)), "internal")
    )
    return _Refused(*_status_for(error))


def _status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The one place where the core's exceptions become gRPC status codes."""
    if isinstance(error, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, WouldMissDeadline):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"refused at arrival: {error}"
    if isinstance(error, QueueWaitTooLong):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"inference queue too long: {error}"
    if isinstance(error, QueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"inference queue full: {error}"
    if isinstance(error, DeadlineExpired):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"dropped before inference: {error}"
    if isinstance(error, ShardError):
        # The shard named: UNAVAILABLE when unreachable (the client may retry), INTERNAL when it
        # answered with an error (a router/shard mismatch, a bug).
        code = (
            grpc.StatusCode.UNAVAILABLE if isinstance(error, ShardUnavailable) else grpc.StatusCode.INTERNAL
        )
        return code, str(error)
    if isinstance(error, BatcherStopped):
        return grpc.StatusCode.UNAVAILABLE, f"server shutting down: {error}"
    _log.exception("recommend_failed", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"inference failed: {type(error).__name__}: {error}"


def _deadline_ns(context: grpc.aio.ServicerContext, arrival_ns: int) -> int | None:
    remaining_s = context.time_remaining()
    return None if remaining_s is None else arrival_ns + int(remaining_s * 1e9)


def _request_deadline_ns(
    request: recommender_pb2.RecommendRequest, arrival_ns: int, call_deadline_ns: int | None
) -> int | None:
    """The earlier of the call's deadline and the request's own timeout_ms (a stream message's)."""
    if request.timeout_ms == 0:
        return call_deadline_ns
    if request.timeout_ms > MAX_REQUEST_TIMEOUT_MS:
        raise InvalidRequest(
            "timeout_ms", f"timeout_ms must be in 0..{MAX_REQUEST_TIMEOUT_MS}, got {request.timeout_ms}"
        )
    own_ns = arrival_ns + request.timeout_ms * 1_000_000
    return own_ns if call_deadline_ns is None else min(own_ns, call_deadline_ns)


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    """Recommend, RecommendStream and GetModelInfo over one recommender and its batcher.

    `tracing`: None takes the process's (`etude.telemetry.request_tracing()`, None when off).
    """

    def __init__(
        self,
        recommender: Recommender | RoutedRecommender,
        batcher: InferenceBatcher,
        tracing: RequestTracing | None = None,
        max_stream_in_flight: int = 0,
        startup_memory: MemoryReading | None = None,
    ) -> None:
        self._recommender = recommender
        # The process's memory before the model's tables were built (None: as it is now).
        self._startup_memory = startup_memory or own_memory()
        self._batcher = batcher
        # 0: what the batcher can hold at once (its queue and a batch per executor), so that a
        # stream whose answers are read meets the queue's refusals, never this bound.
        self.max_stream_in_flight = max_stream_in_flight or stream_in_flight_default(batcher)
        if self.max_stream_in_flight < 1:
            raise ValueError(f"max_stream_in_flight must be >= 1, got {self.max_stream_in_flight}")
        self._tracing = tracing if tracing is not None else request_tracing()
        self._tracer = self._tracing.tracer(__name__) if self._tracing is not None else None
        # Asked once (first GetModelInfo, once the model has initialised its device): the GPU's
        # driver version takes a subprocess.
        self._environment: environment_pb2.Environment | None = None

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        arrival_ns = time.monotonic_ns()
        try:
            return await self._answer(
                request,
                arrival_ns,
                _deadline_ns(context, arrival_ns),
                self._trace_parent(context),
                "Recommend",
            )
        except _Refused as refused:
            await context.abort(refused.code, refused.message)
            raise  # unreachable: abort raises

    async def RecommendStream(
        self,
        request_iterator: AsyncIterator[recommender_pb2.RecommendRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[recommender_pb2.RecommendStreamResponse]:
        answers: asyncio.Queue[recommender_pb2.RecommendStreamResponse | None] = asyncio.Queue()
        # One decision for the stream's requests: the stream's traceparent (or a draw per request).
        parent = self._trace_parent(context)

        async def answer_one(request: recommender_pb2.RecommendRequest, arrival_ns: int) -> None:
            request_parent = parent if parent is not None else self._trace_parent(None)
            try:
                response = await self._answer(
                    request, arrival_ns, _deadline_ns(context, arrival_ns), request_parent, "RecommendStream"
                )
                answers.put_nowait(
                    recommender_pb2.RecommendStreamResponse(request_id=request.request_id, response=response)
                )
            except _Refused as refused:
                answers.put_nowait(
                    recommender_pb2.RecommendStreamResponse(
                        request_id=request.request_id,
                        error=recommender_pb2.RequestError(
                            code=refused.code.value[0], message=refused.message
                        ),
                    )
                )

        # A slot per request from before it is read until its answer has been written.
        slots = asyncio.Semaphore(self.max_stream_in_flight)

        async def read_all() -> None:
            try:
                async with asyncio.TaskGroup() as in_flight:
                    requests = aiter(request_iterator)
                    while True:
                        await slots.acquire()
                        try:
                            request = await anext(requests)
                        except StopAsyncIteration:
                            break
                        in_flight.create_task(answer_one(request, time.monotonic_ns()))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read_all())
        try:
            while (answer := await answers.get()) is not None:
                yield answer  # returns once written: a client that does not read holds it here
                slots.release()
            await reader
        finally:
            # The client went away or the call was cancelled: withdraw what is in flight.
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def GetModelInfo(
        self, request: recommender_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.ModelInfo:
        recommender, config = self._recommender, self._recommender.config
        if self._environment is None:
            self._environment = await asyncio.to_thread(current_environment)
        return recommender_pb2.ModelInfo(
            model=config.model,
            catalog_size=config.catalog_size,
            embedding_dim=recommender.embedding_dim,
            device=str(recommender.device),
            runtime=config.runtime,
            max_session_length=MAX_SESSION_LENGTH,
            max_request_items=config.max_request_items,
            max_batch_size=self._batcher.max_batch_size,
            max_batch_delay_ms=self._batcher.max_batch_delay_ms,
            max_queue_size=self._batcher.max_queue_size,
            parameter_count=recommender.parameter_count,
            details={**recommender.details(), "executors": str(self._batcher.executors)},
            precision=config.precision,
            accuracy=_accuracy_message(recommender.accuracy),
            environment=self._environment,
            max_candidates=recommender.max_candidates,
            memory=server_memory(
                "router" if isinstance(recommender, RoutedRecommender) else "inference",
                self._startup_memory,
                recommender.built_memory,
                recommender.table_bytes,
                recommender.rows_held,
            ),
            shard_memory=await self._shard_memory(),
        )

    async def _shard_memory(self) -> list[environment_pb2.ServerMemory]:
        """A router's shards' memory as they report it now; none from a shard that does not answer
        (GetModelInfo still answers: the shard's loss is the trial's to report, not this call's)."""
        if not isinstance(self._recommender, RoutedRecommender):
            return []
        try:
            infos = await self._recommender.catalog.current_infos()
        except ShardError as error:
            _log.warning("shard_memory_unavailable", reason=str(error))
            return []
        return [info.memory for info in infos]

    def _trace_parent(self, context: grpc.aio.ServicerContext | None) -> otel_context.Context | None:
        """The context a traced request's server span starts in; None: this request is not traced.

        Follows the caller's traceparent when there is one (W3C trace context in the metadata);
        only a request without one is drawn with the root ratio. Reads the sampled flag before
        building anything, so an unsampled request costs a metadata scan.
        """
        if self._tracing is None:
            return None
        metadata = (context.invocation_metadata() or ()) if context is not None else ()
        for key, value in metadata:
            if key == TRACEPARENT:
                sampled = traceparent_sampled(value)
                if sampled is False:
                    return None
                if sampled:
                    return propagate.extract(dict(metadata))
                break  # malformed: ignored, as the W3C spec says
        return otel_context.Context() if self._tracing.sample_root() else None

    async def _answer(
        self,
        request: recommender_pb2.RecommendRequest,
        arrival_ns: int,
        deadline_ns: int | None,
        parent: otel_context.Context | None,
        method: str,
    ) -> recommender_pb2.RecommendResponse:
        """Answers one request, in a server span when `parent` is given; raises _Refused."""
        if parent is None or self._tracer is None:
            try:
                return _response(
                    request, await self._submit(request, arrival_ns, deadline_ns, None), arrival_ns
                )
            except Exception as error:
                raise _refusal(error) from error
        to_epoch_ns = time.time_ns() - time.monotonic_ns()
        span = self._tracer.start_span(
            f"{RPC_SERVICE}/{method}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            start_time=arrival_ns + to_epoch_ns,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": RPC_SERVICE,
                "rpc.method": method,
                "etude.session_id": request.session_id,
                "etude.click_index": len(request.item_ids) - 1,
            },
        )
        # Current while the request is served, so that its log lines carry its ids.
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            batched = await self._submit(request, arrival_ns, deadline_ns, span.get_span_context())
            response = _response(request, batched, arrival_ns)
            self._record_split(span, arrival_ns, batched, to_epoch_ns)
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
            return response
        except Exception as error:
            refused = _refusal(error)
            span.set_attribute("rpc.grpc.status_code", refused.code.value[0])
            span.set_status(trace.StatusCode.ERROR, f"{refused.code.name}: {refused.message}")
            raise refused from error
        finally:
            otel_context.detach(token)
            span.end(end_time=time.monotonic_ns() + to_epoch_ns)

    async def _submit(
        self,
        request: recommender_pb2.RecommendRequest,
        arrival_ns: int,
        deadline_ns: int | None,
        span_context: trace.SpanContext | None,
    ) -> Batched[Recommendation]:
        query = self._recommender.validate(request.item_ids, request.k, request.candidate_ids)
        return await self._batcher.submit(
            query,
            arrival_ns=arrival_ns,
            deadline_ns=_request_deadline_ns(request, arrival_ns, deadline_ns),
            span_context=span_context,
            # What the waiting request holds, near enough: its message, kept until it is answered.
            size_bytes=request.ByteSize(),
        )

    def _record_split(
        self, span: trace.Span, arrival_ns: int, batched: Batched[Recommendation], to_epoch_ns: int
    ) -> None:
        """Child spans for the time queued and the time in the model, placed after the fact.

        Same clock and offset as the server span, so they lie within it: the request arrived
        before it queued, and its batch ended before its answer was built.
        """
        assert self._tracer is not None
        span.set_attribute("etude.batch_size", batched.batch_size)
        parent = trace.set_span_in_context(span)
        batch_start_ns = arrival_ns + batched.queued_ns
        self._tracer.start_span(QUEUED_SPAN, context=parent, start_time=arrival_ns + to_epoch_ns).end(
            end_time=batch_start_ns + to_epoch_ns
        )
        links = [trace.Link(batched.batch_span_context)] if batched.batch_span_context is not None else []
        self._tracer.start_span(
            MODEL_SPAN, context=parent, links=links, start_time=batch_start_ns + to_epoch_ns
        ).end(end_time=batch_start_ns + batched.model_ns + to_epoch_ns)


def stream_in_flight_default(batcher: InferenceBatcher) -> int:
    """Requests the batcher can hold at once: its queue and a running batch per executor."""
    return batcher.max_queue_size + batcher.executors * batcher.max_batch_size


def _response(
    request: recommender_pb2.RecommendRequest, batched: Batched[Recommendation], arrival_ns: int
) -> recommender_pb2.RecommendResponse:
    done_ns = time.monotonic_ns()
    metrics.answered(done_ns - arrival_ns, batched.queued_ns)
    return recommender_pb2.RecommendResponse(
        item_ids=batched.result.item_ids,
        scores=batched.result.scores,
        timing=recommender_pb2.ServerTiming(
            queue_us=batched.queued_ns // 1000,
            inference_us=batched.model_ns // 1000,
            batch_size=batched.batch_size,
            server_total_us=(done_ns - arrival_ns) // 1000,
            **_fanout_fields(batched.result),
        ),
        request_id=request.request_id,
    )


def _fanout_fields(result: Recommendation) -> dict[str, int]:
    """A router's ServerTiming fields on its calls to the catalog shards (none unsharded)."""
    fanout = result.fanout if isinstance(result, RoutedRecommendation) else None
    if fanout is None:
        return {}
    return {
        "shard_fanout_us": fanout.fanout_ns // 1000,
        "shard_compute_us": fanout.shard_compute_us,
        "shard_wire_bytes": fanout.wire_bytes,
        "shard_lookup_calls": fanout.lookup_calls,
    }


def _accuracy_message(report: AccuracyReport | None) -> recommender_pb2.ScoringAccuracy | None:
    """ModelInfo.accuracy: absent (None) when the precision is fp32 or the check was off."""
    if report is None:
        return None
    return recommender_pb2.ScoringAccuracy(
        recall_at_k=report.recall_at_k, k=report.k, sessions=report.sessions, reference=report.reference
    )


def batch_span_attributes(
    recommender: Recommender | RoutedRecommender,
) -> Callable[[Sequence[SessionQuery]], dict[str, AttributeValue]]:
    """What a batch span says about its batch: model, device, runtime, padded shape."""
    config = recommender.config
    fixed: dict[str, AttributeValue] = {
        "etude.model": config.model_path or config.model,
        "etude.device": str(recommender.device),
        "etude.runtime": config.runtime,
        # recommend_batch pads every batch to [B, MAX_SESSION_LENGTH].
        "etude.padded_length": MAX_SESSION_LENGTH,
    }

    def describe(queries: Sequence[SessionQuery]) -> dict[str, AttributeValue]:
        return {
            **fixed,
            "etude.longest_session": max((len(query.item_ids) for query in queries), default=0),
            # Requests of the batch that re-ranked a candidate list instead of the catalog.
            "etude.candidate_requests": sum(query.candidate_ids is not None for query in queries),
        }

    return describe
