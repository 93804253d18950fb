"""Goodput past capacity: does the inference service keep answering when offered more than it can do?

Starts a real `etude serve inference` (a child process; or, with `--costed BATCH_MS ITEM_MS`, the
same servicer and batcher over a model whose batches sleep a known time, immune to CPU noise
from other processes), measures its capacity (closed loop:
`--concurrency` callers sending back to back, long deadlines, OK answers/s), then offers 1x,
2x, 3x and 5x that capacity with the project's open-loop load generator (ramp, then hold; every
request carries `--deadline-ms`) and prints, per load, goodput (OK answers/s over the hold) as
a share of the capacity measured in the same run, and the accepted requests' latency from
their intended send time. Target (issue 10): at 3x, goodput >= 90% of capacity.

    .venv/bin/python benchmarks/bench_overload.py [--catalog-size 1000000 --loads 1 2 3 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from etude.services.loadgen.generator import OK, LoadGenerator, Session
from etude.services.loadgen.h2_client import H2RecommendClient

from etude.v1 import loadgen_pb2, recommender_pb2, recommender_pb2_grpc


@contextlib.contextmanager
def inference_service(
    flags: list[str], startup_s: float = 300.0, costed: list[float] | None = None
) -> Iterator[str]:
    """`etude serve inference FLAGS` as a child process; yields its host:port; stops it after."""
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        if costed:
            command = [
                sys.executable,
                __file__,
                "--serve-costed",
                *map(str, costed),
                "--port-file",
                str(port_file),
            ]
        else:
            command = [sys.executable, "-m", "etude.services.cli", "serve", "inference", "--port", "0"]
            command += ["--port-file", str(port_file), "--log-level", "warning"]
        server = subprocess.Popen(
            [*command, *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + startup_s
            while not port_file.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"inference service did not start: {server.stderr.read()[-2000:]}")  # type: ignore[union-attr]
                time.sleep(0.1)
            yield f"127.0.0.1:{port_file.read_text()}"
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


async def serve_costed(batch_ms: float, item_ms: float, args: argparse.Namespace) -> None:
    """The inference servicer and batcher over noop answers that take batch_ms + item_ms x B."""
    from etude.services.inference.batcher import DynamicBatcher
    from etude.services.inference.recommender import (
        Recommendation,
        Recommender,
        RecommenderConfig,
        SessionQuery,
    )
    from etude.services.inference.server import RecommenderServicer

    from etude.serving import ServiceHost, run_until_signalled, service_full_name

    recommender = Recommender(RecommenderConfig("noop", args.catalog_size))

    def costed(queries: list[SessionQuery]) -> list[Recommendation]:
        time.sleep((batch_ms + item_ms * len(queries)) / 1000)  # off the GIL, like a model
        return recommender.recommend_batch(queries)

    batcher = DynamicBatcher(costed, max_batch_size=args.max_batch_size, executors=args.executors)
    servicer = RecommenderServicer(recommender, batcher)
    host = ServiceHost(
        service_names=[service_full_name(recommender_pb2, "RecommenderService")],
        register=lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(
            servicer, server
        ),
    )
    await batcher.start()
    try:
        await run_until_signalled(host, grace_s=1.0, port_file=args.port_file)
    finally:
        await batcher.stop(drain=False)


def sessions(catalog_size: int, seed: int = 7) -> Iterator[list[int]]:
    rng = random.Random(seed)
    while True:
        length = min(50, int(rng.paretovariate(1.5)))
        yield [rng.randint(1, catalog_size) for _ in range(length)]


async def session_source(catalog_size: int) -> AsyncIterator[Session]:
    for index, items in enumerate(sessions(catalog_size)):
        yield Session(str(index), items)


async def capacity_per_s(target: str, catalog_size: int, concurrency: int, duration_s: float) -> float:
    """OK answers/s with `concurrency` callers back to back (deadlines far away): the ceiling."""
    source = sessions(catalog_size, seed=3)
    answered = 0
    # The same client as the offered load's (the load generator's default transport), so that
    # the client's own CPU weighs on both measurements alike.
    client = H2RecommendClient(target, request_spans=False)
    await client.connect(10.0)

    async def caller(until_s: float, count: bool) -> None:
        nonlocal answered
        while time.monotonic() < until_s:
            outcome = await client.recommend("capacity", next(source), 21, 60.0)
            answered += count and outcome.status == OK

    try:
        # A warm-up round (the cost model learns the batch sizes), then the measured one.
        warm_until = time.monotonic() + min(3.0, duration_s)
        await asyncio.gather(*(caller(warm_until, False) for _ in range(concurrency)))
        start_s = time.monotonic()
        await asyncio.gather(*(caller(start_s + duration_s, True) for _ in range(concurrency)))
        return answered / (time.monotonic() - start_s)
    finally:
        await client.aclose()


async def offered_load(
    target: str,
    catalog_size: int,
    rate_per_s: float,
    ramp_s: int,
    hold_s: int,
    deadline_ms: int,
    records_dir: Path | None = None,
) -> loadgen_pb2.LoadSummary:
    client = H2RecommendClient(target, request_spans=False)
    await client.connect(10.0)
    profile = loadgen_pb2.LoadProfile(
        target_rate_per_s=rate_per_s,
        ramp_duration_s=ramp_s,
        hold_duration_s=hold_s,
        request_timeout_ms=deadline_ms,
    )
    try:
        generator = LoadGenerator(client, session_source(catalog_size), profile, records_dir=records_dir)
        return await generator.run()
    finally:
        await client.aclose()


def server_flags(args: argparse.Namespace, executors: int) -> list[str]:
    return [
        "--model", args.model, "--catalog-size", str(args.catalog_size), "--runtime", args.runtime,
        "--executors", str(executors), "--threads", str(args.threads),
        "--max-batch-size", str(args.max_batch_size),
    ]  # fmt: skip


async def measure(target: str, args: argparse.Namespace) -> None:
    capacity_before = await capacity_per_s(target, args.catalog_size, args.concurrency, args.capacity_s)
    closed_loop = f"closed loop, {args.concurrency} callers, {args.capacity_s:g} s"
    print(f"capacity before ({closed_loop}): {capacity_before:.1f} ok/s")
    print(
        "load  offered/s  goodput/s  accepted p50/p90/p99 ms (intended)  "
        "refused  deadline_exceeded  other  not_sent"
    )
    goodputs: list[tuple[float, float]] = []
    for load in args.loads:
        records_dir = None
        if args.records:
            records_dir = Path(args.records) / f"load-{load:g}x"
            records_dir.mkdir(parents=True, exist_ok=True)
        rate = load * capacity_before
        summary = await offered_load(
            target, args.catalog_size, rate, args.ramp_s, args.hold_s, args.deadline_ms, records_dir
        )
        errors = dict(summary.errors_by_status)
        refused = errors.pop("RESOURCE_EXHAUSTED", 0)
        expired = errors.pop("DEADLINE_EXCEEDED", 0)
        goodput = summary.achieved_hold_rate_per_s
        goodputs.append((load, goodput))
        latency = summary.latency_from_intended
        print(
            f"{load:>3g}x  {rate:>9.0f}  {goodput:>9.1f}  "
            f"{latency.p50_ms:>10.1f} / {latency.p90_ms:>6.1f} / {latency.p99_ms:>6.1f}            "
            f"{refused:>7d}  {expired:>17d}  {sum(errors.values()):>5d}  {summary.requests_not_sent:>8d}",
            flush=True,
        )
    # Measured again: on a shared machine capacity drifts, and the ratio should say by how much.
    capacity_after = await capacity_per_s(target, args.catalog_size, args.concurrency, args.capacity_s)
    capacity = (capacity_before + capacity_after) / 2
    print(f"capacity after: {capacity_after:.1f} ok/s; goodput as % of their mean ({capacity:.1f}):")
    print("  " + ", ".join(f"{load:g}x {100 * goodput / capacity:.0f}%" for load, goodput in goodputs))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gru4rec")
    parser.add_argument("--catalog-size", type=int, default=1_000_000)
    parser.add_argument("--runtime", default="jit")
    parser.add_argument("--executors", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per executor (0 = policy)")
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--loads", type=float, nargs="+", default=[1, 2, 3, 5], help="multiples of capacity")
    parser.add_argument("--deadline-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=128, help="closed-loop callers for capacity")
    parser.add_argument("--capacity-s", type=float, default=10.0)
    parser.add_argument("--ramp-s", type=int, default=2)
    parser.add_argument("--hold-s", type=int, default=10)
    parser.add_argument("--records", default="", help="keep each load's records.csv under this folder")
    parser.add_argument(
        "--costed",
        type=float,
        nargs=2,
        metavar=("BATCH_MS", "ITEM_MS"),
        help="serve a model whose batches sleep BATCH_MS + ITEM_MS per request instead of --model",
    )
    parser.add_argument("--serve-costed", type=float, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.serve_costed:
        asyncio.run(serve_costed(*args.serve_costed, args))
        return
    model = (
        f"a model costing {args.costed[0]:g} ms + {args.costed[1]:g} ms/request"
        if args.costed
        else args.model
    )
    print(
        f"{model} at {args.catalog_size:,} items, {args.runtime}, {args.executors} executor(s); "
        f"deadline {args.deadline_ms} ms; loadgen ramp {args.ramp_s} s, hold {args.hold_s} s "
        "(goodput = OK answers/s over the hold; latency of OK answers only)"
    )
    flags = server_flags(args, args.executors)
    with inference_service(flags, costed=args.costed) as target:
        asyncio.run(measure(target, args))


if __name__ == "__main__":
    main()
