"""LoadGeneratorService: runs one load test per Run call and streams its progress and summary.

The servicer only wires the core together (channel, client, session source, LoadGenerator) and
maps the core's exceptions to gRPC status codes in `_status_of`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import grpc
import structlog

from etude import defaults
from etude.security import client_security
from etude.v1 import loadgen_pb2, loadgen_pb2_grpc, workload_pb2

from .candidates import candidate_sampler_for
from .client import (
    GrpcRecommendClient,
    TargetUnavailable,
    open_channel,
    wait_until_ready,
)
from .generator import CallbackRecommendClient, LoadGenerator, Session
from .h2_client import TRANSPORT_H2, H2RecommendClient
from .metrics import RunPublisher
from .sessions import WorkloadSourceError, in_process_sessions, open_workload_channel, remote_sessions
from .spec import InvalidLoadSpec, transport, validate_load_spec
from .stream_client import TRANSPORT_STREAM, GrpcStreamRecommendClient

_log = structlog.get_logger()


def _status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The one place where the core's exceptions become gRPC status codes."""
    if isinstance(error, InvalidLoadSpec):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, TargetUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, WorkloadSourceError):
        code = getattr(grpc.StatusCode, error.status, grpc.StatusCode.UNAVAILABLE)
        return code, str(error)
    if isinstance(error, OSError):
        return grpc.StatusCode.FAILED_PRECONDITION, f"records_dir: cannot write there: {error}"
    return grpc.StatusCode.INTERNAL, f"load run failed: {type(error).__name__}: {error}"


class LoadGeneratorServicer(loadgen_pb2_grpc.LoadGeneratorServiceServicer):
    """Run(LoadSpec) -> stream of one TickProgress per tick, then one LoadSummary."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = defaults.CONNECT_TIMEOUT_S,
        request_spans: bool = True,
        in_process_source: Callable[[workload_pb2.WorkloadSpec], AsyncGenerator[Session, None]] = (
            in_process_sessions
        ),
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._request_spans = request_spans
        # Sessions when the spec names no workload_endpoint (replaceable for tests).
        self._in_process_source = in_process_source

    async def _client(
        self, request: loadgen_pb2.LoadSpec, stack: contextlib.AsyncExitStack
    ) -> tuple[CallbackRecommendClient, Callable[[], Awaitable[None]]]:
        """The spec's transport to the target, closed by `stack`, and how to connect it (which
        raises TargetUnavailable when the target does not answer in time)."""
        if transport(request) == TRANSPORT_H2:
            h2_client = H2RecommendClient(
                request.target, security=client_security(), request_spans=self._request_spans
            )
            # Cancels what is in flight and closes its connections.
            stack.push_async_callback(h2_client.aclose)
            return h2_client, partial(h2_client.connect, self._connect_timeout_s)
        channel = await stack.enter_async_context(open_channel(request.target))
        ready = partial(wait_until_ready, channel, request.target, self._connect_timeout_s)
        if transport(request) == TRANSPORT_STREAM:
            stream_client = GrpcStreamRecommendClient(channel, request_spans=self._request_spans)
            # Closed before the channel: ends the stream and its reader and writer.
            stack.push_async_callback(stream_client.aclose)
            return stream_client, ready
        return GrpcRecommendClient(channel, request_spans=self._request_spans), ready

    async def Run(
        self, request: loadgen_pb2.LoadSpec, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[loadgen_pb2.RunUpdate]:
        try:
            validate_load_spec(request)
        except InvalidLoadSpec as error:
            await context.abort(*_status_of(error))
        log = _log.bind(run_id=request.run_id, target=request.target)
        async with contextlib.AsyncExitStack() as stack:
            client, connect = await self._client(request, stack)
            sessions: AsyncGenerator[Session, None]
            if request.workload_endpoint:
                workload_channel = await stack.enter_async_context(
                    open_workload_channel(request.workload_endpoint)
                )
                sessions = remote_sessions(workload_channel, request.workload)
            else:
                sessions = self._in_process_source(request.workload)
            # Closed before the channels (exit stack order): ends the workload stream cleanly.
            stack.push_async_callback(sessions.aclose)
            try:
                candidates = await candidate_sampler_for(request)
            except InvalidLoadSpec as error:
                await context.abort(*_status_of(error))
            updates: asyncio.Queue[loadgen_pb2.TickProgress | None] = asyncio.Queue()
            generator = LoadGenerator(
                client,
                sessions,
                request.profile,
                run_id=request.run_id,
                records_dir=Path(request.records_dir) if request.records_dir else None,
                on_progress=updates.put_nowait,
                candidates=candidates,
                log_speedup=request.log_speedup,
            )
            try:
                await connect()
            except TargetUnavailable as error:
                await context.abort(*_status_of(error))
            log.info("load_run_started", ticks=len(generator.ticks))
            run = asyncio.create_task(generator.run())
            run.add_done_callback(lambda _: updates.put_nowait(None))
            published = RunPublisher()
            try:
                while (progress := await updates.get()) is not None:
                    published.publish(generator.totals())
                    yield loadgen_pb2.RunUpdate(progress=progress)
                try:
                    summary = await run
                except Exception as error:
                    log.warning("load_run_failed", error=str(error))
                    await context.abort(*_status_of(error))
                footprint = summary.footprint
                log.info(
                    "load_run_finished",
                    sent=summary.requests_sent,
                    ok=summary.requests_ok,
                    not_sent=summary.requests_not_sent,
                    transport=summary.transport,
                    cpu_us_per_request=round(footprint.cpu_us_per_request, 1),
                    cores_used=round(footprint.cores_used, 3),
                    send_lateness_p99_ms=footprint.send_lateness.p99_ms,
                )
                if footprint.over_core_budget:
                    # The latencies of this run may include the load generator's own CPU
                    # contention: the report warns too; scale out with loadgen_instances.
                    log.warning(
                        "loadgen_over_core_budget",
                        cores_used=round(footprint.cores_used, 3),
                        core_budget=footprint.core_budget,
                    )
                yield loadgen_pb2.RunUpdate(summary=summary)
            finally:
                # The caller went away (or the server is stopping): stop the load; the
                # generator still writes the summary of what ran to the records folder.
                if not run.done():
                    log.info("load_run_cancelled")
                    run.cancel()
                    await asyncio.gather(run, return_exceptions=True)
                published.publish(generator.totals())  # the drain's answers and the cancelled ones
