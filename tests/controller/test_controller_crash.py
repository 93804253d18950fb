"""A controller SIGKILLed mid-trial orphans nothing: its children die with it (parent-death signal),
and a controller restarted over the same results stops whatever recorded process still runs,
stores the experiment INTERRUPTED and writes its report from the trials it kept. Real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.leftovers import (
    is_still_running,
    started_process,
    stop_leftover_processes,
)
from etude.services.controller.drivers.processes import ChildService
from etude.services.results.started import StartedProcess, parse_started, started_text

from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2, controller_pb2_grpc, experiment_pb2

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(1, flush=True); time.sleep(600)"
)


def _spec(results: Path) -> experiment_pb2.ExperimentSpec:
    return parse_spec_dict(
        {
            "name": "crash",
            "models": [{"name": "noop"}],
            "catalog_sizes": [100, 200],
            "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
            "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 3},
            "results": str(results),
        }
    )


def _sleeper() -> subprocess.Popen[bytes]:
    """A process no parent-death signal will stop (as one that outlived its controller)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def _gone(process: StartedProcess, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_still_running(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not is_still_running(process)


async def _wait_for(
    stub: controller_pb2_grpc.ControllerServiceStub,
    experiment_id: str,
    done: Callable[[controller_pb2.Experiment], bool],
    timeout_s: float = 180,
) -> controller_pb2.Experiment:
    deadline = time.monotonic() + timeout_s
    request = controller_pb2.GetExperimentRequest(experiment_id=experiment_id)
    while True:
        experiment = await stub.GetExperiment(request)
        if done(experiment):
            return experiment
        assert time.monotonic() < deadline, f"waited too long; experiment is {experiment}"
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_a_restarted_controller_stops_what_the_killed_one_left_and_reports_it(tmp_path: Path) -> None:
    results = tmp_path / "results"
    first = ChildService("controller", ["--results", str(results)], tmp_path / "controller-1.log")
    survivor = _sleeper()
    try:
        endpoint = await first.start(startup_timeout_s=120)
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = controller_pb2_grpc.ControllerServiceStub(channel)
            request = controller_pb2.SubmitExperimentRequest(spec=_spec(results))
            submitted = await stub.SubmitExperiment(request)
            experiment_id = submitted.experiment_id
            # Killed while its second trial runs, the first one finished and kept.
            await _wait_for(
                stub, experiment_id, lambda e: e.trials[1].state == experiment_pb2.TRIAL_STATE_RUNNING
            )
        started_file = results / experiment_id / "started.json"
        started = parse_started(started_file.read_text(), str(started_file))
        assert sorted(p.service for p in started) == ["inference", "loadgen", "workload"]
        assert all(is_still_running(p) for p in started)
        # One recorded process that survives the controller (no parent-death signal armed).
        recorded = started_process("inference", survivor.pid)
        assert recorded is not None
        started_file.write_text(started_text([*started, recorded]))

        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        await first.wait_exited()
        for child in started:  # the controller's own children die with it
            assert await asyncio.to_thread(_gone, child), f"{child} outlived its SIGKILLed controller"
        assert survivor.poll() is None
        stored = json.loads((results / experiment_id / "experiment.json").read_text())
        assert stored["state"] == "EXPERIMENT_STATE_RUNNING"

        second = ChildService("controller", ["--results", str(results)], tmp_path / "controller-2.log")
        try:
            endpoint = await second.start(startup_timeout_s=120)
            assert survivor.wait(timeout=30) == -signal.SIGTERM
            async with grpc.aio.insecure_channel(endpoint) as channel:
                stub = controller_pb2_grpc.ControllerServiceStub(channel)
                experiment = await stub.GetExperiment(
                    controller_pb2.GetExperimentRequest(experiment_id=experiment_id)
                )
        finally:
            await second.stop(grace_s=5)
    finally:
        await first.stop(grace_s=5)
        survivor.kill()
        survivor.wait()
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_INTERRUPTED
    assert [r.state for r in experiment.trials] == [
        experiment_pb2.TRIAL_STATE_SUCCEEDED,
        experiment_pb2.TRIAL_STATE_INTERRUPTED,
    ]
    report = (results / experiment_id / "report.md").read_text()
    assert experiment.trials[0].trial.trial_id in report
    assert parse_started(started_file.read_text(), str(started_file)) == []
    assert "leftover_stopped" in (tmp_path / "controller-2.log").read_text()


async def test_a_recorded_process_that_ignores_sigterm_is_killed() -> None:
    stubborn = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IGNORES_SIGTERM, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert stubborn.stdout is not None and await stubborn.stdout.readline()  # SIGTERM ignored now
        recorded = started_process("loadgen", stubborn.pid)
        assert recorded is not None
        stopped = await stop_leftover_processes([recorded], grace_s=0.5)
        assert await asyncio.wait_for(stubborn.wait(), 10) == -signal.SIGKILL
        assert stopped == [f"loadgen (pid {stubborn.pid}, SIGKILL)"]
    finally:
        if stubborn.returncode is None:
            stubborn.kill()
            await stubborn.wait()


async def test_a_pid_now_naming_another_process_is_left_alone() -> None:
    bystander = _sleeper()
    try:
        identity = started_process("inference", bystander.pid)
        assert identity is not None
        # The recorded process had this pid but started at another time: not this one.
        reused = StartedProcess("inference", bystander.pid, identity.boot_id, identity.start_ticks - 1)
        other_boot = StartedProcess("inference", bystander.pid, "another-boot", identity.start_ticks)
        assert await stop_leftover_processes([reused, other_boot], grace_s=0.5) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_gone_process_is_not_running() -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = started_process("loadgen", finished.pid)
    finished.wait()
    assert recorded is None or not is_still_running(recorded)
