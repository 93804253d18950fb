"""The RecommenderService servicer: adapts the recommender core and its batcher to gRPC.

Validation runs on the event loop (cheap), the model in the batcher's thread. The core's
exceptions become status codes in one place, `_status_for`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import structlog
from opentelemetry import propagate, trace

from etude.v1 import recommender_pb2, recommender_pb2_grpc
from services.inference.batcher import (
    BatcherStopped,
    DeadlineExpired,
    DynamicBatcher,
    QueueFull,
)
from services.inference.models.base import MAX_SESSION_LENGTH
from services.inference.recommender import (
    InvalidRequest,
    Recommendation,
    Recommender,
    SessionQuery,
)

_log = structlog.get_logger()
_tracer = trace.get_tracer(__name__)

InferenceBatcher = DynamicBatcher[SessionQuery, Recommendation]


def _status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The one place where the core's exceptions become gRPC status codes."""
    if isinstance(error, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, QueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"inference queue full: {error}"
    if isinstance(error, DeadlineExpired):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"dropped before inference: {error}"
    if isinstance(error, BatcherStopped):
        return grpc.StatusCode.UNAVAILABLE, f"server shutting down: {error}"
    _log.exception("recommend_failed", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"inference failed: {type(error).__name__}: {error}"


def _deadline_ns(context: grpc.aio.ServicerContext, arrival_ns: int) -> int | None:
    remaining_s = context.time_remaining()
    return None if remaining_s is None else arrival_ns + int(remaining_s * 1e9)


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    """Recommend, RecommendStream and GetModelInfo over one recommender and its batcher."""

    def __init__(self, recommender: Recommender, batcher: InferenceBatcher) -> None:
        self._recommender = recommender
        self._batcher = batcher

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        arrival_ns = time.monotonic_ns()
        try:
            return await self._answer(
                request, arrival_ns, _deadline_ns(context, arrival_ns), _parent_context(context)
            )
        except Exception as error:
            code, message = _status_for(error)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    async def RecommendStream(
        self,
        request_iterator: AsyncIterator[recommender_pb2.RecommendRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[recommender_pb2.RecommendStreamResponse]:
        answers: asyncio.Queue[recommender_pb2.RecommendStreamResponse | None] = asyncio.Queue()
        parent = _parent_context(context)

        async def answer_one(request: recommender_pb2.RecommendRequest, arrival_ns: int) -> None:
            try:
                response = await self._answer(request, arrival_ns, _deadline_ns(context, arrival_ns), parent)
                answers.put_nowait(
                    recommender_pb2.RecommendStreamResponse(request_id=request.request_id, response=response)
                )
            except Exception as error:
                code, message = _status_for(error)
                answers.put_nowait(
                    recommender_pb2.RecommendStreamResponse(
                        request_id=request.request_id,
                        error=recommender_pb2.RequestError(code=code.value[0], message=message),
                    )
                )

        async def read_all() -> None:
            try:
                async with asyncio.TaskGroup() as in_flight:
                    async for request in request_iterator:
                        in_flight.create_task(answer_one(request, time.monotonic_ns()))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read_all())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader
        finally:
            # The client went away or the call was cancelled: withdraw what is in flight.
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def GetModelInfo(
        self, request: recommender_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.ModelInfo:
        recommender, config = self._recommender, self._recommender.config
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
            details=recommender.details(),
        )

    async def _answer(
        self,
        request: recommender_pb2.RecommendRequest,
        arrival_ns: int,
        deadline_ns: int | None,
        parent: object,
    ) -> recommender_pb2.RecommendResponse:
        with _tracer.start_as_current_span(
            "inference.recommend",
            context=parent,  # type: ignore[arg-type]
            kind=trace.SpanKind.SERVER,
            attributes={"etude.session_id": request.session_id},
        ) as span:
            query = self._recommender.validate(request.item_ids, request.k)
            batched = await self._batcher.submit(query, arrival_ns=arrival_ns, deadline_ns=deadline_ns)
            done_ns = time.monotonic_ns()
            if span.is_recording():
                _record_split(span, arrival_ns, batched.queued_ns, batched.model_ns, done_ns)
                span.set_attribute("etude.batch_size", batched.batch_size)
            return recommender_pb2.RecommendResponse(
                item_ids=batched.result.item_ids,
                scores=batched.result.scores,
                timing=recommender_pb2.ServerTiming(
                    queue_us=batched.queued_ns // 1000,
                    inference_us=batched.model_ns // 1000,
                    batch_size=batched.batch_size,
                    server_total_us=(done_ns - arrival_ns) // 1000,
                ),
                request_id=request.request_id,
            )


def _parent_context(context: grpc.aio.ServicerContext) -> object:
    """The caller's trace context, carried in the call's metadata."""
    return propagate.extract(dict(context.invocation_metadata() or ()))


def _record_split(span: trace.Span, arrival_ns: int, queued_ns: int, model_ns: int, done_ns: int) -> None:
    """Child spans for the time queued and the time in the model, placed after the fact."""
    to_epoch_ns = time.time_ns() - done_ns
    batch_start_ns = arrival_ns + queued_ns
    parent = trace.set_span_in_context(span)
    _tracer.start_span("inference.queued", context=parent, start_time=arrival_ns + to_epoch_ns).end(
        end_time=batch_start_ns + to_epoch_ns
    )
    _tracer.start_span("inference.model", context=parent, start_time=batch_start_ns + to_epoch_ns).end(
        end_time=batch_start_ns + model_ns + to_epoch_ns
    )
