"""No service outlives the process that started it, even when that process is SIGKILLed, and a
child leaves no temporary folder behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from etude.lifetime import PARENT_PID_ENV, die_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")

# A parent that starts a real workload service through the local driver's ChildService, prints the
# child's pid and then waits to be killed.
PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from etude.services.controller.drivers.processes import ChildService

    async def main() -> None:
        child = ChildService("workload", [], Path(sys.argv[1]))
        await child.start(startup_timeout_s=120)
        print("CHILD", child._process.pid, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def test_a_child_service_dies_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "workload.log")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("CHILD "):  # the parent's own log lines come first
            line = parent.stdout.readline()
            assert line, "the parent exited before starting its child"
        child_pid = int(line.split()[1])
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 30
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child_pid), "the child service outlived its SIGKILLed parent"
    finally:
        parent.kill()
    # The port file's folder went as soon as the port was read.
    assert not list(tmp_path.glob("etude-port-*"))


def test_without_an_etude_parent_nothing_is_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PARENT_PID_ENV, raising=False)
    assert die_with_parent() is False
