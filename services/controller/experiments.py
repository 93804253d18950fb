"""The controller's queue of experiments: submit, watch, get, list, cancel; recovered after a restart.

Experiments run in submission order, one at a time by default (each deploys services and drives
load, so two at once on one machine measure their interference); `max_concurrent_experiments`
allows more where the target has room. Watchers get every event of an experiment through a queue
of their own.

With a result store of its own (`store=`, the controller service's --results) the manager is a
platform: every experiment's state is in the store (experiment.json, written from submission
on), and a manager started over the store finds them all again:
- finished experiments (succeeded, failed, cancelled, interrupted) are listed as they were;
- queued ones never started: they are queued again, in their original order;
- running ones were cut off by the stop: what they had started that still runs is stopped (the
  driver's stop_leftovers), they become INTERRUPTED, the trial that was running
  TRIAL_STATE_INTERRUPTED, the trials not started CANCELLED, and their report is written from the
  finished trials, which keep their results. They are not resumed: a measurement across a
  restart would mix two deployments.
A graceful stop (SIGTERM) records the same states itself; the recovery covers a crash.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable

import structlog

from etude.v1 import controller_pb2, experiment_pb2

from ..report.summary import summary_table
from ..results.documents import experiment_text, parse_experiment
from ..results.errors import ResultsError
from ..results.layout import Layout
from ..results.started import StartedProcess, parse_started, started_text
from ..results.store import AsyncResultStore, ResultStore
from .drivers.driver import Driver
from .matrix import validated_experiment
from .runner import INTERRUPTED_ERROR, ExperimentRunner, new_experiment

_log = structlog.get_logger()
FINISHED = (
    controller_pb2.EXPERIMENT_STATE_SUCCEEDED,
    controller_pb2.EXPERIMENT_STATE_FAILED,
    controller_pb2.EXPERIMENT_STATE_CANCELLED,
    controller_pb2.EXPERIMENT_STATE_INTERRUPTED,
)
_UNFINISHED_TRIALS = (
    experiment_pb2.TRIAL_STATE_DEPLOYING,
    experiment_pb2.TRIAL_STATE_RUNNING,
)


class UnknownExperiment(KeyError):
    """No experiment has this id."""


def mark_interrupted(experiment: controller_pb2.Experiment, reason: str = INTERRUPTED_ERROR) -> None:
    """An experiment cut off by a controller stop: the running trial interrupted, the rest not run."""
    for result in experiment.trials:
        if result.state in _UNFINISHED_TRIALS:
            result.state = experiment_pb2.TRIAL_STATE_INTERRUPTED
            result.error = reason
        elif result.state == experiment_pb2.TRIAL_STATE_PENDING:
            result.state = experiment_pb2.TRIAL_STATE_CANCELLED
    experiment.state = controller_pb2.EXPERIMENT_STATE_INTERRUPTED
    experiment.error = reason
    experiment.finished_unix_ms = int(time.time() * 1000)


class ExperimentManager:
    """Queues and runs experiments; give `store` (one result store for every experiment, recovered
    at start) or `store_for` (a store per spec's `results`, nothing recovered)."""

    def __init__(
        self,
        driver: Driver,
        store_for: Callable[[str], ResultStore] | None = None,
        *,
        store: ResultStore | None = None,
        max_concurrent_experiments: int = 1,
    ) -> None:
        if (store_for is None) == (store is None):
            raise ValueError("give exactly one of store_for and store")
        if max_concurrent_experiments < 1:
            raise ValueError(f"max_concurrent_experiments must be >= 1, got {max_concurrent_experiments}")
        self._driver = driver
        self._store_for = store_for
        self._home = store
        self._max_concurrent = max_concurrent_experiments
        self._experiments: dict[str, controller_pb2.Experiment] = {}
        self._stores: dict[str, ResultStore] = {}
        self._watchers: dict[str, list[asyncio.Queue[controller_pb2.ExperimentEvent | None]]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._running: dict[str, tuple[ExperimentRunner, asyncio.Task[controller_pb2.Experiment]]] = {}
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Recovers the experiments of the manager's store (if any), then starts the workers."""
        if self._home is not None:
            queued, cut_off = await asyncio.to_thread(self._recover, self._home)
            for experiment in cut_off:
                await self._interrupt_after_crash(self._home, experiment)
            for experiment_id in queued:
                self._queue.put_nowait(experiment_id)
        self._workers = [
            asyncio.create_task(self._work(), name=f"experiment-worker-{index}")
            for index in range(self._max_concurrent)
        ]

    async def stop(self) -> None:
        """Stops the workers; running experiments are recorded as interrupted, queued ones stay
        queued in the store (a manager started over it runs them)."""
        for runner, task in list(self._running.values()):
            runner.interrupted = True
            task.cancel()
        for worker in self._workers:
            worker.cancel()
        running = [task for _, task in self._running.values()]
        await asyncio.gather(*self._workers, *running, return_exceptions=True)

    def validate(self, spec: experiment_pb2.ExperimentSpec) -> controller_pb2.Experiment:
        """What submitting a resolved spec would run (its trials, the load's duration), with the
        results where this manager would keep them; nothing is created or queued."""
        if self._home is not None:
            spec = _with_results(spec, self._home.uri())
        return validated_experiment(spec)

    async def submit(self, spec: experiment_pb2.ExperimentSpec) -> controller_pb2.Experiment:
        """Queues a resolved spec and returns the queued experiment (also written to its store)."""
        if self._home is not None:
            # The platform keeps every experiment in its own store, whatever the spec named.
            store = self._home
            spec = _with_results(spec, store.uri())
        else:
            assert self._store_for is not None
            store = self._store_for(spec.results)
        experiment = new_experiment(spec, store)
        experiment_id = experiment.experiment_id
        # Written now so that a controller restarted before it runs still finds it queued.
        await AsyncResultStore(store).write_text(
            Layout(experiment_id).experiment_file, experiment_text(experiment)
        )
        self._experiments[experiment_id] = experiment
        self._stores[experiment_id] = store
        self._watchers[experiment_id] = []
        self._queue.put_nowait(experiment_id)
        _log.info("experiment_queued", experiment_id=experiment_id)
        return experiment

    def get(self, experiment_id: str) -> controller_pb2.Experiment:
        try:
            return self._experiments[experiment_id]
        except KeyError:
            raise UnknownExperiment(experiment_id) from None

    def count_by_state(self) -> dict[int, int]:
        """Experiments per ExperimentState; safe from the metrics server's thread."""
        # list() of a dict's values runs in C under the GIL: no resize can interleave.
        return dict(collections.Counter(experiment.state for experiment in list(self._experiments.values())))

    def list(self) -> list[controller_pb2.Experiment]:
        return sorted(self._experiments.values(), key=lambda experiment: experiment.created_unix_ms)

    async def cancel(self, experiment_id: str) -> controller_pb2.Experiment:
        experiment = self.get(experiment_id)
        if experiment.state == controller_pb2.EXPERIMENT_STATE_QUEUED:
            experiment.state = controller_pb2.EXPERIMENT_STATE_CANCELLED
            experiment.finished_unix_ms = int(time.time() * 1000)
            for result in experiment.trials:
                result.state = experiment_pb2.TRIAL_STATE_CANCELLED
            # Stored, or a restarted controller would queue it again.
            await AsyncResultStore(self._stores[experiment_id]).write_text(
                Layout(experiment_id).experiment_file, experiment_text(experiment)
            )
            self._publish(controller_pb2.ExperimentEvent(experiment_id=experiment_id, finished=experiment))
        elif (running := self._running.get(experiment_id)) is not None:
            running[1].cancel()
            await asyncio.gather(running[1], return_exceptions=True)
        return experiment

    async def watch(self, experiment_id: str) -> AsyncIterator[controller_pb2.ExperimentEvent]:
        """Every event of the experiment from now on, ending with its `finished` event."""
        experiment = self.get(experiment_id)
        if experiment.state in FINISHED:
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
            runner = ExperimentRunner(experiment, self._driver, self._stores[experiment_id], self._publish)
            task = asyncio.create_task(runner.run(), name=f"experiment-{experiment_id}")
            self._running[experiment_id] = (runner, task)
            try:
                await asyncio.gather(task, return_exceptions=True)
            finally:
                del self._running[experiment_id]

    def _recover(self, store: ResultStore) -> tuple[tuple[str, ...], tuple[controller_pb2.Experiment, ...]]:
        """Loads every experiment of `store` (blocking reads: run in a thread); returns the ids of
        those to queue again, oldest first, and the experiments that were running (cut off)."""
        queued: list[controller_pb2.Experiment] = []
        cut_off: list[controller_pb2.Experiment] = []
        for name in store.list_dirs():
            experiment = _load(store, name)
            if experiment is None:
                continue
            if experiment.state == controller_pb2.EXPERIMENT_STATE_QUEUED:
                queued.append(experiment)
            elif experiment.state not in FINISHED:
                cut_off.append(experiment)
            self._experiments[experiment.experiment_id] = experiment
            self._stores[experiment.experiment_id] = store
            self._watchers[experiment.experiment_id] = []
        _log.info(
            "experiments_recovered",
            found=len(self._experiments),
            queued=len(queued),
            cut_off=len(cut_off),
            uri=store.uri(),
        )
        in_order = sorted(queued, key=lambda e: e.created_unix_ms)
        return tuple(e.experiment_id for e in in_order), tuple(cut_off)

    async def _interrupt_after_crash(self, store: ResultStore, experiment: controller_pb2.Experiment) -> None:
        """An experiment the previous controller was running when it died: stops what it had
        started that still runs, then stores it INTERRUPTED with its summary and report (in that
        order: a controller dying again meanwhile finds it still running and does it again)."""
        experiment_id = experiment.experiment_id
        layout = Layout(experiment_id)
        started = await asyncio.to_thread(_started_processes, store, experiment_id)
        try:
            stopped = await self._driver.stop_leftovers(experiment_id, started)
        except Exception:
            # Logged, not raised: a controller that cannot clean up must still start and serve.
            _log.exception("leftovers_not_stopped", experiment_id=experiment_id)
            stopped = []
        if stopped:
            _log.warning("leftovers_stopped", experiment_id=experiment_id, stopped=stopped)
        mark_interrupted(experiment)
        writes = AsyncResultStore(store)
        if started:
            await writes.write_text(layout.started_file, started_text([]))
        await writes.write_text(layout.experiment_file, experiment_text(experiment))
        await writes.write_text(layout.summary_table, summary_table(experiment) + "\n")
        _log.warning("experiment_interrupted", experiment_id=experiment_id)
        try:
            from ..report.report import write_report

            await asyncio.to_thread(write_report, store, experiment_id)
        except Exception:
            # The results are stored; `etude report` can rebuild the report from them.
            _log.exception("report_failed", experiment_id=experiment_id)


def _with_results(spec: experiment_pb2.ExperimentSpec, results: str) -> experiment_pb2.ExperimentSpec:
    copy = experiment_pb2.ExperimentSpec()
    copy.CopyFrom(spec)
    copy.results = results
    return copy


def _started_processes(store: ResultStore, experiment_id: str) -> list[StartedProcess]:
    """The processes started.json records for the experiment; none when it has no such file (or
    an unreadable one, logged: stopping nothing is safer than guessing)."""
    relative = Layout(experiment_id).started_file
    try:
        return parse_started(store.read_text(relative), store.uri(relative))
    except FileNotFoundError:
        return []
    except ResultsError as error:
        _log.warning("started_record_unreadable", experiment_id=experiment_id, error=str(error))
        return []


def _load(store: ResultStore, name: str) -> controller_pb2.Experiment | None:
    """The experiment stored in folder `name`; None (logged) for a folder that holds none."""
    relative = Layout(name).experiment_file
    try:
        text = store.read_text(relative)
    except FileNotFoundError:
        return None
    try:
        experiment = parse_experiment(text, store.uri(relative))
    except ResultsError as error:
        # Kept in the store for a person to look at; listing it would show an empty experiment.
        _log.warning("experiment_unreadable", folder=name, uri=store.uri(name), error=str(error))
        return None
    if experiment.experiment_id != name:
        _log.warning("experiment_id_mismatch", folder=name, experiment_id=experiment.experiment_id)
        experiment.experiment_id = name
    return experiment
