"""What every target provides to the runner: deploy a trial's inference service, run the
experiment's workload service and load generators, name where a load generator writes a run's
files, and say when a service it runs is lost. A driver only brings services up and down and
watches them; the trial logic (ExperimentRunner) is shared by every target."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from etude.v1 import experiment_pb2

from ...results.started import StartedProcess


class Driver(Protocol):
    name: str

    def inference_service(
        self, trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, log_dir: Path
    ) -> AbstractAsyncContextManager[str]:
        """Yields host:port of the trial's inference service once it serves; its log and traces
        go to `log_dir`; it is torn down on exit."""
        ...

    def workload_service(self, log_dir: Path) -> AbstractAsyncContextManager[str]:
        """Yields host:port of the experiment's workload service once it serves, as its load
        generators reach it (they stream their sessions from it); its log goes to `log_dir`."""
        ...

    def loadgen_service(self, log_dir: Path, instance: int = 0) -> AbstractAsyncContextManager[str]:
        """Yields host:port of load generator `instance` (0 unless spec.loadgen_instances > 1
        asks for several, side by side) once it serves; its log and traces go to `log_dir`."""
        ...

    def loadgen_records(self, local_dir: Path, instance: int = 0) -> AbstractAsyncContextManager[str]:
        """Yields the folder to name in a LoadSpec as records_dir (a path on load generator
        `instance`'s file system); on exit the run's files are in `local_dir`."""
        ...

    def inference_pid(self) -> int | None:
        """The process id of the running trial's inference service where this machine can see it
        (the controller samples its CPU and memory); None where it cannot (another host, a pod)."""
        ...

    async def service_lost(self) -> str:
        """Returns, with the reason in words (exit status or signal, the log's last lines), as
        soon as a service this driver runs stops serving on its own; waits until cancelled while
        all serve. The runner races a trial's load against it."""
        ...

    async def dead_services(self) -> list[str]:
        """The services this driver started that are gone although their context is still open
        (a load generator killed in one trial is replaced before the next)."""
        ...

    async def stop_leftovers(self, experiment_id: str, started: list[StartedProcess]) -> list[str]:
        """Stops what an earlier controller, which died, started for `experiment_id` and is still
        running: the processes of `started` (local), the objects labelled with the experiment
        (Kubernetes). Returns what it stopped, in words."""
        ...
