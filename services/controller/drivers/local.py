"""The local target: each service a child process on loopback, results in a local folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from etude import defaults
from etude.telemetry import TRACE_FILE_ENV
from etude.v1 import experiment_pb2

from ...results.layout import INFERENCE_TRACE_FILE, loadgen_trace_file, service_log_file
from ..options import as_flags, inference_options
from .processes import ChildService


class LocalDriver:
    """Deploys services as child processes; every one is stopped when its context exits."""

    name = "local"

    def __init__(
        self, startup_timeout_s: float = defaults.STARTUP_TIMEOUT_S, grace_s: float = defaults.GRACE_S
    ) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.grace_s = grace_s
        # Every child started and not yet stopped by its context: what service_lost() watches.
        self._running: set[ChildService] = set()

    @asynccontextmanager
    async def inference_service(
        self, trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, log_dir: Path
    ) -> AsyncIterator[str]:
        """Yields the host:port of a healthy inference service for `trial`."""
        # Sampled traces go next to the trial's records (OTLP JSON lines; see report/traces.py).
        child = ChildService(
            "inference",
            as_flags(inference_options(trial, spec)),
            log_dir / service_log_file("inference"),
            env={TRACE_FILE_ENV: str(log_dir / INFERENCE_TRACE_FILE)},
        )
        async with self._running_child(child) as endpoint:
            yield endpoint

    @asynccontextmanager
    async def workload_service(self, log_dir: Path) -> AsyncIterator[str]:
        """Yields the host:port of a healthy workload service (logs/workload.log)."""
        child = ChildService("workload", [], log_dir / service_log_file("workload"))
        async with self._running_child(child) as endpoint:
            yield endpoint

    @asynccontextmanager
    async def loadgen_service(self, log_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        """Yields the host:port of a healthy load generator (`instance` of several: its own log
        and trace files; instance 0 keeps the names of the only one)."""
        child = ChildService(
            "loadgen",
            [],
            log_dir / service_log_file("loadgen", instance),
            env={TRACE_FILE_ENV: str(log_dir / loadgen_trace_file(instance))},
        )
        async with self._running_child(child) as endpoint:
            yield endpoint

    @asynccontextmanager
    async def _running_child(self, child: ChildService) -> AsyncIterator[str]:
        self._running.add(child)
        try:
            yield await child.start(self.startup_timeout_s)
        finally:
            self._running.discard(child)
            await child.stop(self.grace_s)

    async def service_lost(self) -> str:
        """Returns, with the reason, as soon as a service started here exits while it should
        serve (an exit at teardown is not a loss: the child leaves `_running` first)."""
        children = list(self._running)
        if not children:
            await asyncio.Event().wait()  # nothing to lose: wait to be cancelled
        waits = [asyncio.ensure_future(child.wait_exited()) for child in children]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        finally:
            for wait in waits:
                wait.cancel()

    def running(self) -> list[tuple[str, int]]:
        """(service, pid) of every child serving now."""
        return [(child.service, child.pid) for child in self._running if child.pid is not None]

    async def dead_services(self) -> list[str]:
        """The services started here that have exited although their context is still open."""
        return [child.service for child in self._running if child.exited]

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        """The load generator shares this file system: it writes into `local_dir` itself."""
        yield str(local_dir)
