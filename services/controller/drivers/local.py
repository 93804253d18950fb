"""The local target: each service a child process on loopback, results in a local folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from etude import defaults
from etude.telemetry import TRACE_FILE_ENV
from etude.v1 import experiment_pb2

from ..options import as_flags, inference_options
from ..traces import INFERENCE_TRACE_FILE, LOADGEN_TRACE_FILE
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
        # Sampled traces go next to the trial's records (OTLP JSON lines; see services/controller/traces.py).
        child = ChildService(
            "inference",
            as_flags(inference_options(trial, spec)),
            log_dir / "inference.log",
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
        suffix = f"-{instance}" if instance else ""
        trace_file = LOADGEN_TRACE_FILE.replace(".jsonl", f"{suffix}.jsonl")
        child = ChildService(
            "loadgen", [], log_dir / f"loadgen{suffix}.log", env={TRACE_FILE_ENV: str(log_dir / trace_file)}
        )
        try:
            yield await child.start(self.startup_timeout_s)
        finally:
            await child.stop(self.grace_s)
