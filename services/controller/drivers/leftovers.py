"""Processes a controller that died left running: recognise exactly them and stop them.

A pid alone may name another process by now; with the kernel's boot id and the process's start
time (clock ticks since boot, /proc/PID/stat field 22) it names one process for ever. Linux only:
elsewhere nothing is recorded and nothing stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import structlog

from ...results.started import StartedProcess

_log = structlog.get_logger()
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# After SIGKILL the kernel needs a moment to reap; past this a process is reported as not stopped.
KILL_WAIT_S = 5.0
_POLL_S = 0.05


def process_identity(pid: int) -> tuple[str, int] | None:
    """(boot id, start ticks) of a live process; None when it is gone, a zombie or unknowable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_id = _BOOT_ID.read_text().strip()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after it.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return boot_id, int(fields[19])


def started_process(service: str, pid: int) -> StartedProcess | None:
    """The record of a process just started; None where its identity cannot be read."""
    identity = process_identity(pid)
    if identity is None:
        return None
    return StartedProcess(service=service, pid=pid, boot_id=identity[0], start_ticks=identity[1])


def is_still_running(process: StartedProcess) -> bool:
    """Whether the very process recorded is alive (not another one that got its pid)."""
    return process_identity(process.pid) == (process.boot_id, process.start_ticks)


async def stop_leftover_processes(processes: list[StartedProcess], grace_s: float) -> list[str]:
    """SIGTERM to each recorded process still running, SIGKILL to those not gone `grace_s` later;
    returns what was stopped, in words. A process that cannot be signalled is logged and skipped."""
    running = [p for p in processes if await asyncio.to_thread(is_still_running, p)]
    stopped: list[str] = []
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        for process in running:
            try:
                os.kill(process.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as error:
                _log.error(
                    "leftover_not_signalled", service=process.service, pid=process.pid, error=str(error)
                )
        deadline = time.monotonic() + wait_s
        while running and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            gone = [p for p in running if not await asyncio.to_thread(is_still_running, p)]
            for process in gone:
                running.remove(process)
                stopped.append(f"{process.service} (pid {process.pid}, {sig.name})")
                _log.warning(
                    "leftover_stopped", child_service=process.service, pid=process.pid, signal=sig.name
                )
    for process in running:
        _log.error("leftover_not_stopped", child_service=process.service, pid=process.pid)
    return stopped
