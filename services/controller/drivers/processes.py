"""Child service processes on loopback: start one, wait until its health check says SERVING, stop it.

A child binds port 0 and writes the port it got to a file, so there is no race for a "free"
port between choosing it and binding it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from etude import defaults
from etude.lifetime import child_environment
from etude.security import SECURITY_ENV, open_channel

_log = structlog.get_logger()

# After its drain (`grace_s`) a child flushes its traces and exits: it gets this long for that
# before it is killed.
EXIT_MARGIN_S = 5.0


class ServiceStartError(RuntimeError):
    """A child service exited or did not become healthy in time; the message quotes its log."""


class ChildService:
    """One `etude serve <service>` child process."""

    def __init__(
        self, service: str, flags: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.service = service
        self.flags = list(flags)
        self.log_path = log_path
        # Added to this process's environment (tracing: ETUDE_TRACE_FILE).
        self.env = dict(env or {})
        self.endpoint = ""
        self._process: asyncio.subprocess.Process | None = None

    async def start(
        self, startup_timeout_s: float, on_spawned: Callable[[int], Awaitable[None]] | None = None
    ) -> str:
        """Starts the process and returns host:port once it serves; raises ServiceStartError.
        `on_spawned(pid)` runs as soon as the process exists (the driver records it there)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        port_dir = Path(tempfile.mkdtemp(prefix="etude-port-"))
        try:
            return await self._start(port_dir / "port", startup_timeout_s, on_spawned)
        finally:
            shutil.rmtree(port_dir, ignore_errors=True)

    async def _start(
        self,
        port_file: Path,
        startup_timeout_s: float,
        on_spawned: Callable[[int], Awaitable[None]] | None,
    ) -> str:
        argv = [
            sys.executable, "-m", "etude.services.cli", "serve", self.service,
            "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
            "--log-format", "json", *self.flags,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**inherited_environment(), "PYTHONUNBUFFERED": "1", **child_environment(), **self.env},
            )  # fmt: skip
        _log.info("child_started", child_service=self.service, pid=self._process.pid, log=str(self.log_path))
        if on_spawned is not None:
            await on_spawned(self._process.pid)
        deadline = time.monotonic() + startup_timeout_s
        port = await self._wait_for_port(port_file, deadline)
        self.endpoint = f"127.0.0.1:{port}"
        await self._wait_until_serving(deadline)
        return self.endpoint

    async def _wait_for_port(self, port_file: Path, deadline: float) -> int:
        while not await asyncio.to_thread(port_file.exists):
            self._raise_if_exited()
            if time.monotonic() > deadline:
                raise ServiceStartError(self._explain("did not bind a port in time"))
            await asyncio.sleep(0.05)
        return int(await asyncio.to_thread(port_file.read_text))

    async def _wait_until_serving(self, deadline: float) -> None:
        # With this process's TLS, when it has some: its children serve with the same (flags).
        async with open_channel(self.endpoint) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            last_error = ""
            while True:
                self._raise_if_exited()
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError as error:
                    # Kept for the timeout's message: a TLS handshake refused says why here.
                    last_error = f"{error.code().name}: {error.details()}"
                if time.monotonic() > deadline:
                    said = f" (its health check answered {last_error})" if last_error else ""
                    raise ServiceStartError(self._explain(f"did not report SERVING in time{said}"))
                await asyncio.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def exited(self) -> bool:
        return self._process is not None and self._process.returncode is not None

    async def wait_exited(self) -> str:
        """Waits until the process exits on its own (or is killed); says how, with its log's tail."""
        assert self._process is not None, "not started"
        returncode = await self._process.wait()
        return await asyncio.to_thread(self._explain, _how_it_ended(returncode))

    def _raise_if_exited(self) -> None:
        if self._process is not None and self._process.returncode is not None:
            raise ServiceStartError(self._explain(f"exited with status {self._process.returncode}"))

    def _explain(self, what: str) -> str:
        tail = ""
        if self.log_path.exists():
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        return f"{self.service} service {what}; last lines of {self.log_path}:\n{tail}"

    async def stop(self, grace_s: float = defaults.GRACE_S) -> None:
        """SIGTERM (the service drains for `grace_s`), then SIGKILL if it has not exited
        EXIT_MARGIN_S after that. Safe to call twice."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s + EXIT_MARGIN_S)
        except TimeoutError:
            _log.warning("child_killed", child_service=self.service, pid=process.pid)
            process.kill()
            await process.wait()
        _log.info("child_stopped", child_service=self.service, returncode=process.returncode)


def inherited_environment() -> dict[str, str]:
    """This process's environment less its security settings (a child gets its TLS as flags)."""
    return {name: value for name, value in os.environ.items() if name not in SECURITY_ENV}


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"
