"""Whether streaming sessions from the workload service ever holds a load generator back.

1. Receive rate: sessions and clicks per second one client takes from a workload service process
   (`etude serve workload`) through the load generator's own source (remote_sessions, with its
   read-ahead buffer), as fast as it can, and the CPU that costs the client; against the highest
   rate a load generator sends (each request is one click; bench_loadgen.py's top rate).
2. The same load through a real load generator process (`etude serve loadgen`) against a no-op
   RecommenderService (bench_loadgen.py's) at 1,000 req/s, its sessions from the workload
   service or generated in-process, alternated over rounds: latency from the actual send and
   from the intended send, the load generator's CPU per request, and the CPU the workload
   service spent during the run.

    .venv/bin/python benchmarks/bench_workload_stream.py [--rounds 3] [--hold-s 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_loadgen import PINNED_RATES, start_server
from etude.services.controller.drivers.processes import ChildService
from etude.services.controller.loadgen_client import connect_loadgen
from etude.services.loadgen.sessions import open_workload_channel, remote_sessions

from etude.v1 import loadgen_pb2, workload_pb2

CATALOG_SIZE = 100_000


def workload_spec(seed: int = 7) -> workload_pb2.WorkloadSpec:
    # The bol.com preset's statistics (shared/anchors.md), as an experiment would stream them.
    return workload_pb2.WorkloadSpec(
        catalog_size=CATALOG_SIZE,
        powerlaw_fits=workload_pb2.PowerLawFits(
            session_lengths=workload_pb2.ScipyPowerLaw(a=0.07004, loc=2, scale=277),
            click_counts=workload_pb2.ScipyPowerLaw(a=0.04069, loc=1, scale=2335),
        ),
        seed=seed,
    )


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def receive_rate(endpoint: str, seconds: float) -> tuple[float, float, float]:
    """(sessions/s, clicks/s, client CPU us per click) taking sessions as fast as possible."""
    async with open_workload_channel(endpoint) as channel:
        sessions = remote_sessions(channel, workload_spec())
        await anext(sessions)  # the popularity table is built before the clock starts
        count = clicks = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        async for session in sessions:
            count += 1
            clicks += len(session.item_ids)
            if count % 1024 == 0 and time.perf_counter() - started >= seconds:
                break
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        await sessions.aclose()
    return count / elapsed, clicks / elapsed, cpu_s / clicks * 1e6


async def load_run(
    loadgen: str, target: str, workload_endpoint: str, rate: float, ramp_s: int, hold_s: int, seed: int
) -> loadgen_pb2.LoadSummary:
    spec = loadgen_pb2.LoadSpec(
        target=target,
        profile=loadgen_pb2.LoadProfile(
            target_rate_per_s=rate, ramp_duration_s=ramp_s, hold_duration_s=hold_s
        ),
        workload=workload_spec(seed),
        workload_endpoint=workload_endpoint,
        run_id=f"{'service' if workload_endpoint else 'in-process'}-{seed}",
    )
    async with connect_loadgen(loadgen) as client:
        return await client.run(spec, ramp_s + hold_s + 60, lambda progress: None)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        workload = ChildService("workload", [], folder / "workload.log")
        loadgen = ChildService("loadgen", [], folder / "loadgen.log")
        server: subprocess.Popen[bytes] | None = None
        try:
            workload_endpoint = await workload.start(60)
            loadgen_endpoint = await loadgen.start(60)
            server, target = start_server(folder, "noop", None)

            sessions_s, clicks_s, cpu_us = await receive_rate(workload_endpoint, args.receive_s)
            highest = max(PINNED_RATES)
            print(f"1. receive rate from the workload service ({args.receive_s:g} s, bol.com statistics)")
            print(
                f"   {sessions_s:,.0f} sessions/s, {clicks_s:,.0f} clicks/s; client CPU {cpu_us:.2f} us/click"
            )
            print(
                f"   clicks/s over the highest rate a load generator sends ({highest:,.0f} req/s, "
                f"bench_loadgen.py): {clicks_s / highest:.1f}x"
            )

            print(f"\n2. noop at {args.rate:g} req/s (ramp {args.ramp_s} s, hold {args.hold_s} s), ms")
            print(
                "   round source      ok/s_hold not_sent act_p50 act_p90 act_p99 int_p90 late_p99 "
                "cpu_us/req workload_cpu_s"
            )
            p90s: dict[str, list[float]] = {"service": [], "in-process": []}
            for round_index in range(args.rounds):
                order = [("service", workload_endpoint), ("in-process", "")]
                # Alternated, so that a drift in the shared machine's load favours neither.
                for source, endpoint in order if round_index % 2 == 0 else order[::-1]:
                    cpu_before_s = process_cpu_s(workload.pid)
                    summary = await load_run(
                        loadgen_endpoint, target, endpoint, args.rate, args.ramp_s, args.hold_s, round_index
                    )
                    workload_cpu_s = process_cpu_s(workload.pid) - cpu_before_s
                    actual, intended = summary.latency_from_actual, summary.latency_from_intended
                    p90s[source].append(actual.p90_ms)
                    print(
                        f"   {round_index:>5} {source:<11} {summary.achieved_hold_rate_per_s:>9.0f} "
                        f"{summary.requests_not_sent:>8d} {actual.p50_ms:>7.2f} {actual.p90_ms:>7.2f} "
                        f"{actual.p99_ms:>7.2f} {intended.p90_ms:>7.2f} "
                        f"{summary.footprint.send_lateness.p99_ms:>8.2f} "
                        f"{summary.footprint.cpu_us_per_request:>10.0f} {workload_cpu_s:>11.2f}",
                        flush=True,
                    )
            service, in_process = statistics.median(p90s["service"]), statistics.median(p90s["in-process"])
            print(
                f"   median p90 from the actual send: service {service:.2f} ms, in-process "
                f"{in_process:.2f} ms, ratio {service / in_process:.2f}"
            )
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)
            await loadgen.stop(2.0)
            await workload.stop(2.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--ramp-s", type=int, default=2)
    parser.add_argument("--hold-s", type=int, default=10)
    parser.add_argument("--receive-s", type=float, default=5.0)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
