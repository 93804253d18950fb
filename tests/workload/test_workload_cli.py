"""`etude serve workload`'s module contract, and a real serve() process from start to SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from etude.services.workload import cli
from grpc_health.v1 import health_pb2, health_pb2_grpc

from etude import defaults
from etude.v1 import workload_pb2, workload_pb2_grpc

# The common flags as services/cli.py adds them, then the service's own: what `etude serve
# workload` runs, without importing the other services.
SERVE_SCRIPT = """
import argparse, asyncio, sys
from etude import defaults
from etude.services.workload import cli
parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=cli.DEFAULT_PORT)
parser.add_argument("--port-file", default=None)
parser.add_argument("--grace-s", type=float, default=5.0)
cli.add_arguments(parser)
asyncio.run(cli.serve(parser.parse_args(sys.argv[1:])))
"""


def test_cli_module_has_the_serve_contract_and_imports_no_numpy() -> None:
    assert cli.DEFAULT_PORT == 50051
    assert cli.__doc__ is not None and "\n" not in cli.__doc__.strip()
    parser = argparse.ArgumentParser(exit_on_error=False)
    cli.add_arguments(parser)
    assert parser.parse_args([]).popularity_cache_size == defaults.POPULARITY_CACHE_SIZE
    assert parser.parse_args(["--popularity-cache-size", "0"]).popularity_cache_size == 0
    with pytest.raises(argparse.ArgumentError, match="must be an integer >= 0"):
        parser.parse_args(["--popularity-cache-size", "-1"])
    probe = "import sys, etude.services.workload.cli; print('numpy' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr


async def _wait_for_port(port_file: Path, process: asyncio.subprocess.Process) -> int:
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(port_file.exists):
        assert process.returncode is None, "the service exited before serving"
        assert time.monotonic() < deadline, "the service did not write its port file"
        await asyncio.sleep(0.05)
    return int(await asyncio.to_thread(port_file.read_text))


async def test_serve_answers_until_sigterm_then_exits_cleanly(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", SERVE_SCRIPT, "--port", "0", "--port-file", str(port_file)],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port = await _wait_for_port(port_file, process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="etude.v1.WorkloadService"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            spec = workload_pb2.WorkloadSpec(
                catalog_size=100,
                exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=2.0),
                total_clicks=500,
            )
            stub = workload_pb2_grpc.WorkloadServiceStub(channel)
            clicks = [len(batch.item_ids) async for batch in stub.StreamSessions(spec)]
            assert sum(clicks) == 500
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
