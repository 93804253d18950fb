"""Which experiment the running task works for, and the record of the processes started for it.

The runner sets CURRENT_OWNER once per experiment. It is a ContextVar because each experiment
runs in a task of its own: the drivers it calls see that experiment, even with several running at
once, without every Driver method taking the id. The local driver records each child it starts
(started.json, so a controller restarted after a crash can stop the ones still alive); the
Kubernetes driver labels what it creates with the experiment.
"""

from __future__ import annotations

from contextvars import ContextVar

import structlog

from ...results.errors import ResultsUnwritable
from ...results.layout import Layout
from ...results.started import StartedProcess, started_text
from ...results.store import AsyncResultStore

_log = structlog.get_logger()


class ExperimentOwner:
    """The experiment a task works for; keeps its started.json equal to its live children."""

    def __init__(self, experiment_id: str, store: AsyncResultStore) -> None:
        self.experiment_id = experiment_id
        self._store = store
        self._file = Layout(experiment_id).started_file
        self._alive: list[StartedProcess] = []

    async def started(self, process: StartedProcess) -> None:
        """Records a child just started. A write error is raised: a child that a crash would
        orphan unrecorded must not run (the caller stops it)."""
        self._alive.append(process)
        await self._store.write_text(self._file, started_text(self._alive))

    async def stopped(self, process: StartedProcess) -> None:
        """Forgets a child that was stopped. A write error is logged: the stale entry is harmless
        (a recorded process that is gone, or whose pid now names another process, is left alone)."""
        if process in self._alive:
            self._alive.remove(process)
        try:
            await self._store.write_text(self._file, started_text(self._alive))
        except ResultsUnwritable as error:
            _log.warning("started_record_not_updated", experiment_id=self.experiment_id, error=str(error))


CURRENT_OWNER: ContextVar[ExperimentOwner | None] = ContextVar("etude_experiment_owner", default=None)
