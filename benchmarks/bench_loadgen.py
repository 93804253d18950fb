"""How much load one load-generator process can offer, and what it adds to the latency it reports.

Starts a no-op RecommenderService (answers at once) in a separate process on loopback, runs the
load generator at several rates (ramp then hold) and prints the achieved rate, latency from the
intended and from the actual send time, and the load generator's CPU seconds per request.

    .venv/bin/python benchmarks/bench_loadgen.py [--rates 500 1000 2000] [--ramp-s 2 --hold-s 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from etude.services.loadgen.client import GrpcRecommendClient, open_channel, wait_until_ready
from etude.services.loadgen.generator import LoadGenerator, Session

from etude.v1 import loadgen_pb2, recommender_pb2, recommender_pb2_grpc


class NoopRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Answers every Recommend at once with k fixed items: the serving path without a model."""

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        started_ns = time.perf_counter_ns()
        k = request.k or 21
        return recommender_pb2.RecommendResponse(
            item_ids=range(1, k + 1),
            scores=[0.0] * k,
            timing=recommender_pb2.ServerTiming(
                batch_size=1, server_total_us=(time.perf_counter_ns() - started_ns) // 1000
            ),
        )


async def serve_noop(port_file: Path) -> None:
    from etude.serving import ServiceHost, run_until_signalled, service_full_name

    host = ServiceHost(
        service_names=[service_full_name(recommender_pb2, "RecommenderService")],
        register=lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(
            NoopRecommender(), server
        ),
    )
    await run_until_signalled(host, grace_s=1.0, port_file=str(port_file))


async def synthetic_sessions(catalog_size: int = 100_000) -> AsyncIterator[Session]:
    rng = random.Random(7)
    index = 0
    while True:
        length = min(50, int(rng.paretovariate(1.5)))
        yield Session(str(index), [rng.randint(1, catalog_size) for _ in range(length)])
        index += 1


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(target: str, rate: float, ramp_s: int, hold_s: int, no_request_spans: bool) -> None:
    async with open_channel(target) as channel:
        await wait_until_ready(channel, target, 10.0)
        profile = loadgen_pb2.LoadProfile(
            target_rate_per_s=rate, ramp_duration_s=ramp_s, hold_duration_s=hold_s
        )
        with tempfile.TemporaryDirectory() as records_dir:
            generator = LoadGenerator(
                GrpcRecommendClient(channel, request_spans=not no_request_spans),
                synthetic_sessions(),
                profile,
                records_dir=Path(records_dir),
            )
            cpu_before = cpu_s()
            summary = await generator.run()
            cpu_used = cpu_s() - cpu_before
    intended, actual = summary.latency_from_intended, summary.latency_from_actual
    print(
        f"{rate:>7.0f} {summary.achieved_hold_rate_per_s:>9.1f} {summary.requests_sent:>7d} "
        f"{summary.requests_not_sent:>8d} {summary.requests_failed:>6d} "
        f"{intended.p50_ms:>7.2f} {intended.p90_ms:>7.2f} {intended.p99_ms:>8.2f} "
        f"{actual.p50_ms:>7.2f} {actual.p90_ms:>7.2f} {actual.p99_ms:>8.2f} "
        f"{1e6 * cpu_used / max(1, summary.requests_sent):>9.0f}",
        flush=True,
    )


async def measure_all(target: str, args: argparse.Namespace) -> None:
    print(
        f"loadgen against a no-op RecommenderService at {target}; ramp {args.ramp_s} s, "
        f"hold {args.hold_s} s; achieved = OK answers/s over the hold; "
        f"latencies in ms (HDR, 3 significant digits); tracing "
        f"{'on (SDK provider, no exporter)' if args.tracing else 'off (no-op tracer)'}"
        f"{', no request spans' if args.no_request_spans else ''}"
    )
    print(
        "   rate  achieved    sent not_sent errors "
        "int_p50 int_p90  int_p99 act_p50 act_p90  act_p99 cpu_us/req"
    )
    for rate in args.rates:
        await measure(target, rate, args.ramp_s, args.hold_s, args.no_request_spans)


def main(args: argparse.Namespace) -> None:
    if args.tracing:
        from etude.telemetry import configure_tracing

        configure_tracing("bench-loadgen")
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        # Its own process, so that its CPU is not counted as the load generator's.
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve-noop", str(port_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            asyncio.run(measure_all(f"127.0.0.1:{port_file.read_text()}", args))
        finally:
            server.terminate()
            server.wait(10)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[500.0, 1000.0, 2000.0])
    parser.add_argument("--ramp-s", type=int, default=2)
    parser.add_argument("--hold-s", type=int, default=8)
    parser.add_argument("--tracing", action="store_true", help="install the OpenTelemetry SDK")
    parser.add_argument("--no-request-spans", action="store_true", help="no span per request")
    parser.add_argument("--serve-noop", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve_noop is not None:
        asyncio.run(serve_noop(arguments.serve_noop))
    else:
        main(arguments)
