"""The local target: each service a child process on loopback, results in a local folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from etude import defaults
from etude.telemetry import TRACE_FILE_ENV
from etude.v1 import experiment_pb2

from ...results.layout import INFERENCE_TRACE_FILE, loadgen_trace_file, service_log_file
from ...results.started import StartedProcess
from ..options import as_flags, inference_options, shard_options
from .leftovers import started_process, stop_leftover_processes
from .owner import CURRENT_OWNER
from .processes import EXIT_MARGIN_S, ChildService


class LocalDriver:
    """Deploys services as child processes; every one is stopped when its context exits."""

    name = "local"

    def __init__(
        self,
        startup_timeout_s: float = defaults.STARTUP_TIMEOUT_S,
        grace_s: float = defaults.GRACE_S,
        security_flags: Sequence[str] = (),
    ) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.grace_s = grace_s
        # Given to every child (etude.security.child_tls_flags): the controller's TLS, so that
        # the trial's channels (controller -> loadgen -> inference) are TLS when its API is.
        self.security_flags = list(security_flags)
        # Every child started and not yet stopped by its context: what service_lost() watches.
        self._running: set[ChildService] = set()
        self._inference: ChildService | None = None

    @asynccontextmanager
    async def inference_service(
        self, trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, log_dir: Path
    ) -> AsyncIterator[str]:
        """Yields the host:port of a healthy inference service for `trial`: with catalog shards,
        the router, once its shards serve (all of them stop with it)."""
        options = inference_options(trial, spec)
        async with AsyncExitStack() as shards:
            if trial.hardware.catalog_shards >= 2:
                children = [
                    ChildService(
                        "shard",
                        [*as_flags(shard_options(trial, spec, index)), *self.security_flags],
                        log_dir / service_log_file("shard", index),
                    )
                    for index in range(trial.hardware.catalog_shards)
                ]
                # Started together; if one fails the others are cancelled, and a cancelled start
                # stops its child.
                async with asyncio.TaskGroup() as starting:
                    started = [
                        starting.create_task(shards.enter_async_context(self._running_child(child)))
                        for child in children
                    ]
                options["catalog_shards"] = ",".join(task.result() for task in started)
            # Sampled traces go next to the trial's records (OTLP JSON lines; see report/traces.py).
            child = ChildService(
                "inference",
                [*as_flags(options), *self.security_flags],
                log_dir / service_log_file("inference"),
                env={TRACE_FILE_ENV: str(log_dir / INFERENCE_TRACE_FILE)},
            )
            async with self._running_child(child) as endpoint:
                self._inference = child
                try:
                    yield endpoint
                finally:
                    self._inference = None

    def inference_pid(self) -> int | None:
        """The running trial's inference child (its serving processes are its children)."""
        return self._inference.pid if self._inference is not None else None

    @asynccontextmanager
    async def workload_service(self, log_dir: Path) -> AsyncIterator[str]:
        """Yields the host:port of a healthy workload service (logs/workload.log)."""
        child = ChildService("workload", list(self.security_flags), log_dir / service_log_file("workload"))
        async with self._running_child(child) as endpoint:
            yield endpoint

    @asynccontextmanager
    async def loadgen_service(self, log_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        """Yields the host:port of a healthy load generator (`instance` of several: its own log
        and trace files; instance 0 keeps the names of the only one)."""
        child = ChildService(
            "loadgen",
            self.security_flags,
            log_dir / service_log_file("loadgen", instance),
            env={TRACE_FILE_ENV: str(log_dir / loadgen_trace_file(instance))},
        )
        async with self._running_child(child) as endpoint:
            yield endpoint

    @asynccontextmanager
    async def _running_child(self, child: ChildService) -> AsyncIterator[str]:
        owner = CURRENT_OWNER.get()
        recorded: StartedProcess | None = None

        async def record(pid: int) -> None:
            nonlocal recorded
            if owner is not None:
                recorded = await asyncio.to_thread(started_process, child.service, pid)
                if recorded is not None:
                    await owner.started(recorded)

        self._running.add(child)
        try:
            yield await child.start(self.startup_timeout_s, on_spawned=record)
        finally:
            self._running.discard(child)
            await child.stop(self.grace_s)
            if owner is not None and recorded is not None:
                await owner.stopped(recorded)

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

    def endpoints(self) -> list[tuple[str, str]]:
        """(service, host:port) of every child serving now."""
        return [(child.service, child.endpoint) for child in self._running if child.endpoint]

    async def stop_leftovers(self, experiment_id: str, started: list[StartedProcess]) -> list[str]:
        """Stops the processes an earlier controller recorded for `experiment_id` that still run
        (SIGTERM, then SIGKILL after the grace period); a pid now naming another process is spared."""
        return await stop_leftover_processes(started, self.grace_s + EXIT_MARGIN_S)

    async def dead_services(self) -> list[str]:
        """The services started here that have exited although their context is still open."""
        return [child.service for child in self._running if child.exited]

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        """The load generator shares this file system: it writes into `local_dir` itself."""
        yield str(local_dir)
