"""Live progress of a running experiment on the terminal: one line per second of load."""

from __future__ import annotations

import sys
from typing import TextIO

from etude.v1 import controller_pb2, experiment_pb2, loadgen_pb2


class ProgressPrinter:
    """Prints trial state changes and per-second progress; on a terminal the tick line updates in place."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._open_line = False

    def __call__(self, event: controller_pb2.ExperimentEvent) -> None:
        if event.HasField("progress"):
            self._tick(event.progress)
        elif event.HasField("trial"):
            result = event.trial
            state = experiment_pb2.TrialState.Name(result.state).removeprefix("TRIAL_STATE_").lower()
            self._print(f"[{result.trial.trial_id}] {state}" + (f": {result.error}" if result.error else ""))

    def _tick(self, tick: loadgen_pb2.TickProgress) -> None:
        line = (
            f"  {tick.run_id} t={tick.tick + 1:>3}s target {tick.target_rate_per_s:7.1f}/s"
            f" sent {tick.sent:5d} done {tick.completed:5d} errors {tick.errors:4d}"
            f" not sent {tick.not_sent:4d} in flight {tick.in_flight:4d}"
            f" p90 {tick.p90_ms:8.2f} ms"
        )
        if self._live:
            self._stream.write("\r\033[K" + line)
            self._stream.flush()
            self._open_line = True
        elif (tick.tick + 1) % 5 == 0:
            self._print(line)

    def _print(self, line: str) -> None:
        if self._open_line:
            self._stream.write("\n")
            self._open_line = False
        self._stream.write(line + "\n")
        self._stream.flush()
