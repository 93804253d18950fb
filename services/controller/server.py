"""ControllerService: a thin gRPC shell around the ExperimentManager."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator

import grpc

from etude.spec import SpecError
from etude.v1 import controller_pb2, controller_pb2_grpc

from ..results.errors import ResultsUnwritable
from .experiments import ExperimentManager, UnknownExperiment
from .listing import InvalidPage, page_of
from .validation import resolve


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, manager: ExperimentManager) -> None:
        self._manager = manager

    async def SubmitExperiment(
        self, request: controller_pb2.SubmitExperimentRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.Experiment:
        try:
            # Off the event loop: a model file is loaded and a click log indexed to check them.
            spec = await asyncio.to_thread(resolve, request.spec)
            if request.validate_only:
                return self._manager.validate(spec)
            return await self._manager.submit(spec)
        except SpecError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"spec.{error}")
            raise  # unreachable: abort raises
        except ResultsUnwritable as error:
            await _abort_unwritable(error, context)
            raise  # unreachable: abort raises

    async def WatchExperiment(
        self, request: controller_pb2.WatchExperimentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[controller_pb2.ExperimentEvent]:
        await self._known(request.experiment_id, context)
        async for event in self._manager.watch(request.experiment_id):
            yield event

    async def GetExperiment(
        self, request: controller_pb2.GetExperimentRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.Experiment:
        await self._known(request.experiment_id, context)
        return self._manager.get(request.experiment_id)

    async def ListExperiments(
        self, request: controller_pb2.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.ListExperimentsResponse:
        try:
            return page_of(self._manager.list(), request.page_size, request.page_token)
        except InvalidPage as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            raise  # unreachable: abort raises

    async def CancelExperiment(
        self, request: controller_pb2.CancelExperimentRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.Experiment:
        await self._known(request.experiment_id, context)
        try:
            return await self._manager.cancel(request.experiment_id)
        except ResultsUnwritable as error:
            await _abort_unwritable(error, context)
            raise  # unreachable: abort raises

    async def _known(self, experiment_id: str, context: grpc.aio.ServicerContext) -> None:
        if not experiment_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "experiment_id: must not be empty")
        try:
            self._manager.get(experiment_id)
        except UnknownExperiment:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"experiment_id: no experiment {experiment_id!r}")


async def _abort_unwritable(error: ResultsUnwritable, context: grpc.aio.ServicerContext) -> None:
    """A store that cannot take the write: RESOURCE_EXHAUSTED when it is full (gRPC's code for
    "the file system is out of space"), UNAVAILABLE otherwise (read-only, no permission)."""
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
    await context.abort(code, str(error))
