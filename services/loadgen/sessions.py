"""Session sources for the load generator: columnar session batches turned into sessions, either
generated in-process (etude.services.workload.generator) or streamed from a WorkloadService
(read ahead into a bounded buffer, so the stream never holds up a send).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from typing import Any

import grpc

from etude import defaults, security
from etude.serving import MAX_MESSAGE_BYTES
from etude.v1 import workload_pb2, workload_pb2_grpc

from .generator import Session
from .spec import InvalidLoadSpec

DEFAULT_MAX_SESSION_LENGTH = defaults.MAX_SESSION_LENGTH
DEFAULT_SESSIONS_PER_BATCH = defaults.SESSIONS_PER_BATCH
# Batches a remote source reads ahead of the sessions the load generator has taken: with 1,024
# sessions a batch, thousands of requests in hand while the next batch travels. gRPC's flow
# control holds the workload service back beyond that, so memory stays bounded.
PREFETCH_BATCHES = defaults.WORKLOAD_PREFETCH_BATCHES


# The stream's flow control: without BDP probing the HTTP/2 window stays at its initial 64 KiB, so
# the workload service makes a batch only when the read-ahead buffer has taken one, instead of
# filling a window grown to megabytes with work that competes for the CPU the run measures with.
WORKLOAD_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.bdp_probe", 0),
]


def open_workload_channel(endpoint: str) -> grpc.aio.Channel:
    """A channel to the WorkloadService at `endpoint` (host:port), with that flow control and the
    process's client security (TLS when a CA is configured)."""
    return security.open_channel(endpoint, options=WORKLOAD_CHANNEL_OPTIONS)


class WorkloadSourceError(RuntimeError):
    """The session source failed; `status` is the gRPC status name that best describes why."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def split_batch(
    first_session_id: int,
    session_lengths: Iterable[int],
    item_ids: Iterable[int],
    session_id_step: int = 1,
    click_offsets_s: Sequence[float] = (),
) -> list[Session]:
    """Session i of the batch holds the next `session_lengths[i]` items (and their click
    offsets, when the batch has them); its id is first_session_id + i * session_id_step (a
    replay's part of n numbers sessions n apart)."""
    items = [int(item) for item in item_ids]
    lengths = [int(length) for length in session_lengths]
    if sum(lengths) != len(items):
        raise WorkloadSourceError(
            "DATA_LOSS",
            f"session batch: session_lengths add up to {sum(lengths)} but it holds {len(items)} item_ids",
        )
    offsets_s = list(click_offsets_s)
    if offsets_s and len(offsets_s) != len(items):
        raise WorkloadSourceError(
            "DATA_LOSS",
            f"session batch: {len(offsets_s)} click_offsets_s for {len(items)} item_ids",
        )
    sessions = []
    offset = 0
    for index, length in enumerate(lengths):
        session_id = first_session_id + index * session_id_step
        times_s = offsets_s[offset : offset + length] if offsets_s else None
        sessions.append(Session(str(session_id), items[offset : offset + length], times_s))
        offset += length
    return sessions


async def _limit_clicks(sessions: AsyncIterator[Session], total_clicks: int) -> AsyncIterator[Session]:
    """Stops once `total_clicks` clicks were yielded (0: never); the last session is cut to fit."""
    clicks = 0
    async for session in sessions:
        if total_clicks:
            remaining = total_clicks - clicks
            if remaining <= 0:
                return
            session = Session(session.session_id, session.item_ids[:remaining])
        clicks += len(session.item_ids)
        yield session


async def in_process_sessions(workload: workload_pb2.WorkloadSpec) -> AsyncGenerator[Session, None]:
    """Sessions generated in this process by etude.services.workload.generator (imported lazily)."""
    try:
        from ..workload.generator import (  # type: ignore[import-not-found,unused-ignore]
            SessionGenerator,
            SyntheticWorkload,
        )
    except ImportError as error:
        raise WorkloadSourceError(
            "FAILED_PRECONDITION",
            f"workload: the in-process generator is not available ({error}); "
            "set workload_endpoint to stream sessions from a WorkloadService",
        ) from error
    sessions_per_batch = workload.sessions_per_batch or DEFAULT_SESSIONS_PER_BATCH

    def build_generator() -> Any:
        generator = SessionGenerator(SyntheticWorkload.from_proto(workload))
        # The first batch checks sessions_per_batch against the generator's limits now,
        # before the run starts, rather than mid-run.
        return generator, generator.next_batch(sessions_per_batch)

    try:
        # Off the event loop: the popularity table of a large catalog takes seconds to build,
        # and a batch milliseconds, either of which would delay sends.
        generator, first_batch = await asyncio.to_thread(build_generator)
    except ValueError as error:
        # The generator's InvalidWorkloadSpec names its field; keep it under "workload.".
        field = getattr(error, "field", None)
        raise InvalidLoadSpec(f"workload.{field}" if field else "workload", str(error)) from error

    async def generate() -> AsyncIterator[Session]:
        batch = first_batch
        while True:
            for session in split_batch(batch.first_session_id, batch.lengths, batch.item_ids):
                yield session
            batch = await asyncio.to_thread(generator.next_batch, sessions_per_batch)

    async for session in _limit_clicks(generate(), workload.total_clicks):
        yield session


async def remote_sessions(
    channel: grpc.aio.Channel,
    workload: workload_pb2.WorkloadSpec,
    prefetch_batches: int = PREFETCH_BATCHES,
) -> AsyncGenerator[Session, None]:
    """Sessions streamed from WorkloadService/StreamSessions over `channel`. A reader task keeps
    up to `prefetch_batches` batches ahead of what was taken, so that a session is at hand when
    the load generator asks (the stream's latency hides behind the buffer)."""
    if prefetch_batches < 1:
        raise ValueError(f"prefetch_batches must be >= 1, got {prefetch_batches}")
    stub = workload_pb2_grpc.WorkloadServiceStub(channel)
    call = stub.StreamSessions(workload)
    # A batch's sessions, the end of the stream (None) or why it failed.
    buffered: asyncio.Queue[list[Session] | BaseException | None] = asyncio.Queue(prefetch_batches)

    async def read_ahead() -> None:
        try:
            async for batch in call:
                await buffered.put(
                    split_batch(
                        batch.first_session_id,
                        batch.session_lengths,
                        batch.item_ids,
                        batch.session_id_step or 1,
                        batch.click_offsets_s,
                    )
                )
            await buffered.put(None)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as error:
            await buffered.put(_source_error(error))
        except Exception as error:  # a malformed batch (WorkloadSourceError) ends the source
            await buffered.put(error)

    reader = asyncio.create_task(read_ahead(), name="workload-read-ahead")
    try:
        while (sessions := await buffered.get()) is not None:
            if isinstance(sessions, BaseException):
                raise sessions
            for session in sessions:
                yield session
    finally:
        reader.cancel()
        call.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def _source_error(error: grpc.aio.AioRpcError) -> Exception:
    status = error.code().name
    if status == "INVALID_ARGUMENT":
        return InvalidLoadSpec("workload", error.details() or "rejected")
    return WorkloadSourceError(status, f"workload_endpoint: StreamSessions failed: {error.details()}")
