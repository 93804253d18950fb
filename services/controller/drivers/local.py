"""The local target: each service a child process on loopback, results in a local folder."""

from __future__ import annotations

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
        try:
            yield await child.start(self.startup_timeout_s)
        finally:
            await child.stop(self.grace_s)

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
        try:
            yield await child.start(self.startup_timeout_s)
        finally:
            await child.stop(self.grace_s)

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        """The load generator shares this file system: it writes into `local_dir` itself."""
        yield str(local_dir)
