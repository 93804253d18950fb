"""Workload generator throughput on one core, against the paper's 1,000,000 clicks/s at 10M items.

    python benchmarks/bench_workload.py [--catalog-size 10000000] [--seconds 5] [--grpc]

Prints, per exponent pair, the set-up time (drawing the C click counts and building the sampling
table) apart from the generation rate, then the rate with the proto encoding the service adds,
and with --grpc the rate a client receives from a real server on loopback (both on this core).
"""

from __future__ import annotations

import os

# One BLAS / OpenMP thread: set before numpy loads those libraries.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"
# gRPC core's info lines (a GOAWAY when the --grpc server stops) are not results.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from etude.services.workload.generator import (  # noqa: E402
    ItemPopularity,
    SessionGenerator,
    SyntheticWorkload,
)

TARGET_CLICKS_PER_S = 1_000_000


def _exponents(text: str) -> tuple[float, float]:
    alpha_length, alpha_clicks = (float(part) for part in text.split(","))
    return alpha_length, alpha_clicks


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog-size", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured rate")
    parser.add_argument(
        "--exponents",
        type=_exponents,
        nargs="+",
        default=[(2.5, 2.0), (1.8, 1.5)],
        metavar="ALPHA_LENGTH,ALPHA_CLICKS",
    )
    parser.add_argument("--sessions-per-batch", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to (default: first)")
    parser.add_argument("--grpc", action="store_true", help="also stream through a real server")
    return parser.parse_args()


def _rate(produce: Callable[[], int], seconds: float, windows: int = 5) -> list[float]:
    """Clicks per second of calling `produce` (returns clicks made), in `windows` equal slices
    of `seconds`: on a shared machine the median slice is steadier than one long average."""
    produce()  # warm-up: first-touch page faults and lazy imports are not throughput
    rates = []
    for _ in range(windows):
        clicks = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / windows:
            clicks += produce()
        rates.append(clicks / elapsed)
    return rates


def _report(label: str, rates: list[float]) -> None:
    median = statistics.median(rates)
    spread = f" (median of {len(rates)}, slowest {min(rates):,.0f})" if len(rates) > 1 else ""
    print(
        f"  {label:<28} {median:>12,.0f} clicks/s{spread}; target {TARGET_CLICKS_PER_S:,}/s, "
        f"ratio {median / TARGET_CLICKS_PER_S:.2f}x"
    )


async def _grpc_rate(workload: SyntheticWorkload, args: argparse.Namespace) -> float:
    """Clicks per second a client receives over loopback, server and client on this core.

    Timed from the first batch received, so the server's own table build is left out.
    """
    import grpc
    from etude.services.workload.server import PopularityCache, WorkloadServicer

    from etude.logs import configure_logging
    from etude.serving import MAX_MESSAGE_BYTES, ServiceHost, service_full_name
    from etude.v1 import workload_pb2, workload_pb2_grpc

    configure_logging("bench-workload", level="warning")
    servicer = WorkloadServicer(PopularityCache(max_entries=1))
    host = ServiceHost(
        [service_full_name(workload_pb2, "WorkloadService")],
        lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(servicer, server),
    )
    port = await host.start()
    spec = workload_pb2.WorkloadSpec(
        catalog_size=workload.catalog_size,
        exponents=workload_pb2.PowerLawExponents(
            alpha_length=workload.alpha_length, alpha_clicks=workload.alpha_clicks
        ),
        seed=workload.seed,
        sessions_per_batch=args.sessions_per_batch,
    )
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    clicks = 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            call = workload_pb2_grpc.WorkloadServiceStub(channel).StreamSessions(spec)
            started = None
            async for batch in call:
                if started is None:
                    started = time.perf_counter()
                    continue
                clicks += len(batch.item_ids)
                if (elapsed := time.perf_counter() - started) >= args.seconds:
                    break
            call.cancel()
    finally:
        await host.stop(grace_s=0)
    return clicks / elapsed


def main() -> None:
    args = _parse_args()
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    print(
        f"workload generator on core {cpu} of {platform.processor() or platform.machine()}, "
        f"C = {args.catalog_size:,}, {args.sessions_per_batch} sessions per batch, "
        f"{args.seconds:g} s per rate"
    )
    for alpha_length, alpha_clicks in args.exponents:
        workload = SyntheticWorkload(args.catalog_size, alpha_length, alpha_clicks, seed=args.seed)
        started = time.perf_counter()
        popularity = ItemPopularity.for_workload(workload)
        setup_s = time.perf_counter() - started
        print(
            f"alpha_length {alpha_length}, alpha_clicks {alpha_clicks}: set-up {setup_s:.2f} s "
            f"(C click counts + table of {popularity.num_distinct_counts:,} distinct counts)"
        )
        generator = SessionGenerator(workload, popularity)

        def generate(generator: SessionGenerator = generator) -> int:
            return generator.next_batch(args.sessions_per_batch).num_clicks

        def generate_and_encode(generator: SessionGenerator = generator) -> int:
            batch = generator.next_batch(args.sessions_per_batch)
            batch.to_proto().SerializeToString()
            return batch.num_clicks

        _report("generation", _rate(generate, args.seconds))
        _report("generation + proto encoding", _rate(generate_and_encode, args.seconds))
        if args.grpc:
            _report("received over gRPC", [asyncio.run(_grpc_rate(workload, args))])


if __name__ == "__main__":
    main()
