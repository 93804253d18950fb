"""started.json: the processes a controller started for an experiment and has not stopped yet, so
that a controller restarted after a crash can stop the ones still alive. This module owns the file.

A process is named by its pid and by what makes the pid unique over time: the kernel's boot id
and the process's start time in clock ticks since boot (/proc/PID/stat, field 22). A pid reused
by another process after the recorded one died has another start time, so it is never touched.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ResultsError
from .store import json_text

FORMAT_VERSION = 1


@dataclass(frozen=True)
class StartedProcess:
    """One child process of the controller: its service and how to find exactly it again."""

    service: str
    pid: int
    boot_id: str
    start_ticks: int


def started_text(processes: list[StartedProcess]) -> str:
    """started.json's text for the processes alive now."""
    return json_text({"version": FORMAT_VERSION, "processes": [asdict(p) for p in processes]})


def parse_started(text: str, source: str) -> list[StartedProcess]:
    """The processes a started.json names; raises ResultsError naming `source` when malformed."""
    try:
        document: Any = json.loads(text)
        return [
            StartedProcess(
                service=str(entry["service"]),
                pid=int(entry["pid"]),
                boot_id=str(entry["boot_id"]),
                start_ticks=int(entry["start_ticks"]),
            )
            for entry in document["processes"]
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise ResultsError(f"{source}: not a list of started processes: {error}") from error
