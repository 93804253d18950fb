"""Log lines as a platform reads them: JSON lines keep a logged exception's traceback, and no event
overwrites the process's `service` key (the controller names a child `child_service`)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import structlog
from etude.services.controller.drivers import processes
from etude.services.controller.drivers.processes import ChildService

from etude.logs import configure_logging


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _fail_deep_inside(secret_token: str) -> None:
    raise ValueError(f"no model at {len(secret_token)}")


def test_a_logged_exception_keeps_its_traceback_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("etude-controller", "json")
    try:
        _fail_deep_inside("s3cret")
    except ValueError:
        structlog.get_logger().exception("trial_failed", trial_id="noop-c100-cpu-eager")
    (line,) = _json_lines(capsys.readouterr().err)
    assert (line["event"], line["level"], line["service"]) == ("trial_failed", "error", "etude-controller")
    (error,) = line["exception"]
    assert (error["exc_type"], error["exc_value"]) == ("ValueError", "no model at 6")
    frames = [frame["name"] for frame in error["frames"]]
    assert frames[-2:] == ["test_a_logged_exception_keeps_its_traceback_in_json", "_fail_deep_inside"]
    assert all(frame["filename"].endswith("test_logs.py") for frame in error["frames"])
    # The frames' local variables stay out of the log (they may hold credentials or tensors).
    assert "s3cret" not in json.dumps(line)


def test_a_logged_exception_keeps_its_traceback_on_the_console(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("etude-controller", "console")
    try:
        _fail_deep_inside("s3cret")
    except ValueError:
        structlog.get_logger().exception("trial_failed")
    err = capsys.readouterr().err
    assert "trial_failed" in err and "_fail_deep_inside" in err and "ValueError: no model at 6" in err


async def test_a_killed_child_is_logged_as_child_service_beside_the_controllers_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configure_logging("etude-controller", "json")
    # The module's logger may be bound to an earlier configuration: take a fresh one.
    monkeypatch.setattr(processes, "_log", structlog.get_logger())
    monkeypatch.setattr(processes, "EXIT_MARGIN_S", 0.5)
    child = ChildService("workload", [], tmp_path / "workload.log")
    await child.start(startup_timeout_s=120)
    assert child._process is not None
    # A stopped process cannot drain on SIGTERM: stop() has to kill it.
    os.kill(child._process.pid, signal.SIGSTOP)
    await child.stop(grace_s=0)
    lines = {line["event"]: line for line in _json_lines(capsys.readouterr().err)}
    for event in ("child_started", "child_killed", "child_stopped"):
        assert lines[event]["service"] == "etude-controller", lines[event]
        assert lines[event]["child_service"] == "workload", lines[event]
    assert lines["child_stopped"]["returncode"] == -signal.SIGKILL
