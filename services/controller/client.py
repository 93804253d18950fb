"""A client of a running controller (ControllerService): submit, watch, get, list, cancel.

What `etude submit|watch|get|list|cancel` and other internal services use instead of hand-written
grpcurl JSON. Channel security (TLS, the bearer token) comes from etude.security.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import grpc

from etude import defaults
from etude.security import ClientSecurity, open_channel
from etude.v1 import controller_pb2, controller_pb2_grpc, experiment_pb2

CONTROLLER_ENV = "ETUDE_CONTROLLER"


def default_controller() -> str:
    """ETUDE_CONTROLLER, else the controller's default port on this machine."""
    return os.environ.get(CONTROLLER_ENV) or f"127.0.0.1:{defaults.CONTROLLER_PORT}"


class ControllerUnavailable(ConnectionError):
    """The controller could not be reached (or refused the caller's credentials)."""


class ControllerClient:
    """`async with ControllerClient("host:port") as controller: await controller.submit(spec)`."""

    def __init__(self, target: str, security: ClientSecurity | None = None) -> None:
        self.target = target
        self._channel = open_channel(target, security=security)
        self._stub = controller_pb2_grpc.ControllerServiceStub(self._channel)

    async def __aenter__(self) -> ControllerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._channel.close()

    async def submit(self, spec: experiment_pb2.ExperimentSpec) -> controller_pb2.Experiment:
        return await self._stub.SubmitExperiment(controller_pb2.SubmitExperimentRequest(spec=spec))

    async def validate(self, spec: experiment_pb2.ExperimentSpec) -> controller_pb2.Experiment:
        """What the controller would run for `spec` (state VALIDATED, trials, estimated_load_s);
        INVALID_ARGUMENT names the bad field. Nothing is created."""
        return await self._stub.SubmitExperiment(
            controller_pb2.SubmitExperimentRequest(spec=spec, validate_only=True)
        )

    async def get(self, experiment_id: str) -> controller_pb2.Experiment:
        return await self._stub.GetExperiment(
            controller_pb2.GetExperimentRequest(experiment_id=experiment_id)
        )

    async def list(self, page_size: int = 0) -> AsyncIterator[controller_pb2.ExperimentSummary]:
        """Every experiment's summary, newest first, fetched a page (`page_size`; 0: the
        controller's default) at a time."""
        token = ""
        while True:
            response = await self._stub.ListExperiments(
                controller_pb2.ListExperimentsRequest(page_size=page_size, page_token=token)
            )
            for summary in response.experiments:
                yield summary
            token = response.next_page_token
            if not token:
                return

    async def cancel(self, experiment_id: str) -> controller_pb2.Experiment:
        return await self._stub.CancelExperiment(
            controller_pb2.CancelExperimentRequest(experiment_id=experiment_id)
        )

    async def watch(self, experiment_id: str) -> AsyncIterator[controller_pb2.ExperimentEvent]:
        """The experiment's events until it ends (the last one carries the finished experiment)."""
        call = self._stub.WatchExperiment(controller_pb2.WatchExperimentRequest(experiment_id=experiment_id))
        async for event in call:
            yield event

    async def wait(
        self, experiment_id: str, on_event: Callable[[controller_pb2.ExperimentEvent], None]
    ) -> controller_pb2.Experiment:
        """Follows the experiment to its end, handing every event to `on_event`; returns it finished."""
        async for event in self.watch(experiment_id):
            on_event(event)
            if event.HasField("finished"):
                return event.finished
        # The stream ended without a finished event (a controller stopping): what it holds now.
        return await self.get(experiment_id)


def describe_rpc_error(error: grpc.aio.AioRpcError, target: str) -> str:
    """One line for a person: the status, and what it means here."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"controller {target} is not reachable ({error.details()})"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"controller {target} refused the credentials: {error.details()} (--auth-token-file)"
    return f"{code.name}: {error.details()}"
