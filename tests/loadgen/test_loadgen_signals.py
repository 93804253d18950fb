"""A real `etude serve loadgen` process signalled in the middle of a load test (SIGINT as Ctrl-C
sends it, SIGTERM as a scheduler does) stops the load and still writes summary.json of what ran."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.processes import ChildService
from etude.services.results.layout import RECORDS_FILE, SUMMARY_FILE
from loadgen_fakes import FakeRecommender, FakeWorkload

from etude.event_loop import fast_loop_factory
from etude.serving import ServiceHost, service_full_name
from etude.v1 import (
    loadgen_pb2,
    loadgen_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    workload_pb2,
    workload_pb2_grpc,
)


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    """A recommender and a workload service for the load generator to drive, on one port."""
    recommender = FakeRecommender(delay_s=0.002)
    workload = FakeWorkload(session_length=3, sessions_per_batch=4)

    def register(server: grpc.aio.Server) -> None:
        recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(recommender, server)
        workload_pb2_grpc.add_WorkloadServiceServicer_to_server(workload, server)

    host = ServiceHost(
        service_names=[
            service_full_name(recommender_pb2, "RecommenderService"),
            service_full_name(workload_pb2, "WorkloadService"),
        ],
        register=register,
    )
    port = await host.start()
    yield f"127.0.0.1:{port}"
    await host.stop(0)


@pytest.mark.parametrize("caller_cancels", [False, True], ids=["caller-waits", "caller-cancels"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signalled_loadgen_writes_the_summary_of_what_ran(
    backend: str, tmp_path: Path, sig: signal.Signals, caller_cancels: bool
) -> None:
    """`caller-cancels`: the caller gets the signal too and cancels its call (Ctrl-C of a group)."""
    loadgen = ChildService("loadgen", ["--grace-s", "1"], tmp_path / "loadgen.log")
    records = tmp_path / "run"
    spec = loadgen_pb2.LoadSpec(
        target=backend,
        workload_endpoint=backend,
        profile=loadgen_pb2.LoadProfile(target_rate_per_s=20, ramp_duration_s=0, hold_duration_s=120, k=5),
        workload=workload_pb2.WorkloadSpec(
            catalog_size=50, exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.5)
        ),
        records_dir=str(records),
        run_id="signalled",
    )
    try:
        endpoint = await loadgen.start(startup_timeout_s=120)
        async with grpc.aio.insecure_channel(endpoint) as channel:
            call = loadgen_pb2_grpc.LoadGeneratorServiceStub(channel).Run(spec)
            while (await call.read()).progress.tick < 2:
                pass
            assert loadgen.pid is not None
            os.kill(loadgen.pid, sig)
            if caller_cancels:
                call.cancel()
            ended = await asyncio.wait_for(loadgen.wait_exited(), 60)
    finally:
        await loadgen.stop(grace_s=1)
    assert "exited with status 0" in ended
    summary = json.loads((records / SUMMARY_FILE).read_text())
    assert summary["run_id"] == "signalled"
    assert int(summary["requests_ok"]) >= 40  # two ticks at least, at 20/s
    assert (records / RECORDS_FILE).stat().st_size > 0
    # The load generator runs on uvloop where it is installed (etude/event_loop.py).
    expected_loop = "uvloop" if fast_loop_factory() is not None else "asyncio"
    assert f'"event_loop": "{expected_loop}"' in (tmp_path / "loadgen.log").read_text()
