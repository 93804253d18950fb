"""Several serving processes on one port: a supervisor runs N `etude serve inference` children that
all bind the port with SO_REUSEPORT, and the kernel spreads incoming connections across them.

One grpc.aio process answers at most about 10,000 calls/s (shared/anchors.md); N processes
multiply that. The supervisor imports neither torch nor gRPC and forks nothing itself: each
child is a fresh interpreter (spawned), so no torch thread pool or gRPC core crosses a fork.
Each child builds the same model (same flags, same seed: the same weights), so on CPU "one
model" means N identical copies in memory; on CUDA each child also holds its own CUDA context
and the device time-slices between them (MPS makes them run concurrently).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from etude.lifetime import child_environment

_log = structlog.get_logger()


def child_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, skip: Sequence[str]) -> list[str]:
    """The flags that reproduce `args` for `parser`'s options, except the destinations in `skip`."""
    flags: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", *skip):
            continue
        value = getattr(args, action.dest, None)
        if isinstance(action, argparse._StoreTrueAction):
            flags += [action.option_strings[0]] if value else []
        elif value is not None:
            flags += [action.option_strings[0], str(value)]
    return flags


async def serve_processes(
    count: int, flags: Sequence[str], *, host: str, port: int, port_file: str | None, grace_s: float
) -> int:
    """Runs `count` children on one port until SIGTERM/SIGINT or until one exits; returns the
    exit status (0 after a signal, 1 when a child died)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    children: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="etude-processes-") as folder:
        try:
            for index in range(count):
                child_port_file = Path(folder) / f"port-{index}"
                children.append(await _spawn(flags, host, port, child_port_file))
                # The first child may have picked the port (port 0): the others join it.
                port = await _wait_for_port(children[-1], child_port_file, stop)
            if port_file:
                await asyncio.to_thread(_write_port_file, Path(port_file), port)
            _log.info("serving_processes", port=port, processes=count, pids=[c.pid for c in children])
            exits = [asyncio.create_task(child.wait()) for child in children]
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({stopped, *exits}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            failed = stopped not in done
            if failed:
                _log.error("serving_process_exited", returncodes=[c.returncode for c in children])
            return 1 if failed else 0
        finally:
            await _stop_all(children, grace_s)


async def _spawn(flags: Sequence[str], host: str, port: int, port_file: Path) -> asyncio.subprocess.Process:
    argv = [
        sys.executable, "-m", "etude.services.cli", "serve", "inference", *flags,
        "--host", host, "--port", str(port), "--port-file", str(port_file), "--reuse-port",
    ]  # fmt: skip
    # Each child arms its own parent-death signal (etude.lifetime): it dies with the supervisor.
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, env={**os.environ, **child_environment()}
    )


async def _wait_for_port(child: asyncio.subprocess.Process, port_file: Path, stop: asyncio.Event) -> int:
    while not await asyncio.to_thread(port_file.exists):
        if child.returncode is not None:
            raise SystemExit(f"etude serve inference: serving process {child.pid} exited: {child.returncode}")
        if stop.is_set():
            raise SystemExit("etude serve inference: stopped while starting")
        await asyncio.sleep(0.05)
    return int(await asyncio.to_thread(port_file.read_text))


async def _stop_all(children: list[asyncio.subprocess.Process], grace_s: float) -> None:
    """SIGTERM (each drains), then SIGKILL what is left after `grace_s`: no child outlives us."""
    running = [child for child in children if child.returncode is None]
    for child in running:
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 1.0
    for child in running:
        try:
            await asyncio.wait_for(child.wait(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            child.kill()
            await child.wait()


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)
