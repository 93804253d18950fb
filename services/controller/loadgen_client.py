"""The controller's seam to a load generator: run one LoadSpec, stream its progress, get its
summary. The runner sees only LoadGeneratorClient and LoadRunError; the gRPC channel, the stub
and the mapping of RPC errors live here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import grpc

from etude.security import open_channel
from etude.serving import MAX_MESSAGE_BYTES
from etude.v1 import loadgen_pb2, loadgen_pb2_grpc

ProgressCallback = Callable[[loadgen_pb2.TickProgress], None]


class LoadRunError(Exception):
    """A load generator refused or failed a run; the message is 'STATUS_CODE: details'."""


class LoadGeneratorClient(Protocol):
    """A load generator the runner drives: one run at a time, until its summary."""

    async def run(
        self, spec: loadgen_pb2.LoadSpec, deadline_s: float, on_progress: ProgressCallback
    ) -> loadgen_pb2.LoadSummary:
        """Runs `spec`, passing each tick's progress on; raises LoadRunError."""
        ...


class GrpcLoadGenerator:
    """A LoadGeneratorClient over LoadGeneratorService.Run."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = loadgen_pb2_grpc.LoadGeneratorServiceStub(channel)

    async def run(
        self, spec: loadgen_pb2.LoadSpec, deadline_s: float, on_progress: ProgressCallback
    ) -> loadgen_pb2.LoadSummary:
        summary = None
        try:
            async for update in self._stub.Run(spec, timeout=deadline_s):
                if update.HasField("progress"):
                    on_progress(update.progress)
                elif update.HasField("summary"):
                    summary = update.summary
        except grpc.aio.AioRpcError as error:
            raise LoadRunError(f"{error.code().name}: {error.details()}") from error
        if summary is None:
            raise LoadRunError("the load generator ended without a summary")
        return summary


@asynccontextmanager
async def connect_loadgen(endpoint: str) -> AsyncIterator[GrpcLoadGenerator]:
    """A client of the load generator at `endpoint` (host:port), its channel closed on exit."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    # TLS when this process has a CA configured (its children then serve TLS: LocalDriver).
    async with open_channel(endpoint, options=options) as channel:
        yield GrpcLoadGenerator(channel)
