"""The controller's queue of experiments: submit, watch, get, list, cancel.

Experiments run one at a time in submission order (each deploys services and drives load, so
running two at once on one machine would measure their interference). Watchers get every
event of an experiment through a queue of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import structlog

from etude.v1 import controller_pb2, experiment_pb2
from services.controller.runner import Driver, ExperimentRunner, new_experiment
from services.controller.store import ResultStore

_log = structlog.get_logger()
_FINISHED = (
    controller_pb2.EXPERIMENT_STATE_SUCCEEDED,
    controller_pb2.EXPERIMENT_STATE_FAILED,
    controller_pb2.EXPERIMENT_STATE_CANCELLED,
)


class UnknownExperiment(KeyError):
    """No experiment has this id."""


class ExperimentManager:
    def __init__(self, driver: Driver, store_for: Callable[[str], ResultStore]) -> None:
        self._driver = driver
        self._store_for = store_for
        self._experiments: dict[str, controller_pb2.Experiment] = {}
        self._watchers: dict[str, list[asyncio.Queue[controller_pb2.ExperimentEvent | None]]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._running: dict[str, asyncio.Task[controller_pb2.Experiment]] = {}
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="experiment-worker")

    async def stop(self) -> None:
        """Cancels the running experiment (its state is recorded as cancelled) and the worker."""
        for task in list(self._running.values()):
            task.cancel()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, *self._running.values(), return_exceptions=True)

    def submit(self, spec: experiment_pb2.ExperimentSpec) -> controller_pb2.Experiment:
        """Queues a resolved spec and returns the queued experiment."""
        experiment = new_experiment(spec, self._store_for(spec.results))
        self._experiments[experiment.experiment_id] = experiment
        self._watchers[experiment.experiment_id] = []
        self._queue.put_nowait(experiment.experiment_id)
        _log.info("experiment_queued", experiment_id=experiment.experiment_id)
        return experiment

    def get(self, experiment_id: str) -> controller_pb2.Experiment:
        try:
            return self._experiments[experiment_id]
        except KeyError:
            raise UnknownExperiment(experiment_id) from None

    def list(self) -> list[controller_pb2.Experiment]:
        return sorted(self._experiments.values(), key=lambda experiment: experiment.created_unix_ms)

    async def cancel(self, experiment_id: str) -> controller_pb2.Experiment:
        experiment = self.get(experiment_id)
        if experiment.state == controller_pb2.EXPERIMENT_STATE_QUEUED:
            experiment.state = controller_pb2.EXPERIMENT_STATE_CANCELLED
            for result in experiment.trials:
                result.state = experiment_pb2.TRIAL_STATE_CANCELLED
            self._publish(controller_pb2.ExperimentEvent(experiment_id=experiment_id, finished=experiment))
        elif (task := self._running.get(experiment_id)) is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return experiment

    async def watch(self, experiment_id: str) -> AsyncIterator[controller_pb2.ExperimentEvent]:
        """Every event of the experiment from now on, ending with its `finished` event."""
        experiment = self.get(experiment_id)
        if experiment.state in _FINISHED:
            yield controller_pb2.ExperimentEvent(experiment_id=experiment_id, finished=experiment)
            return
        queue: asyncio.Queue[controller_pb2.ExperimentEvent | None] = asyncio.Queue()
        self._watchers[experiment_id].append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._watchers[experiment_id].remove(queue)

    def _publish(self, event: controller_pb2.ExperimentEvent) -> None:
        for queue in self._watchers.get(event.experiment_id, []):
            queue.put_nowait(event)
            if event.HasField("finished"):
                queue.put_nowait(None)

    async def _work(self) -> None:
        while True:
            experiment_id = await self._queue.get()
            experiment = self._experiments[experiment_id]
            if experiment.state != controller_pb2.EXPERIMENT_STATE_QUEUED:
                continue
            runner = ExperimentRunner(
                experiment, self._driver, self._store_for(experiment.spec.results), self._publish
            )
            task = asyncio.create_task(runner.run(), name=f"experiment-{experiment_id}")
            self._running[experiment_id] = task
            try:
                await asyncio.gather(task, return_exceptions=True)
            finally:
                del self._running[experiment_id]
