"""Distributed inference on this machine: a router in front of N catalog shards against one
unsharded server, at the same catalog size, for each mapping strategy.

Every deployment is real processes on loopback (`etude serve shard` x N, `etude serve inference
--catalog-shards`, or one `etude serve inference`). Requests are the clicks of synthetic
workload sessions (alpha_clicks 2.0, the popularity the `popular` shards replicate), each
request the session so far, sent with `--in-flight` requests outstanding. Prints client latency
p50/p90/p99, the router's fan-out time and the slowest shard's compute per batch (ServerTiming),
the shards each batch's item rows were looked up from (mean), bytes to and from the shards per
request, and each process's resident memory. On a 2-core
machine the shards, the router and this client share two cores: the sharded figures include
that contention, which a deployment with a machine per shard would not have.

    .venv/bin/python benchmarks/bench_shards.py --catalog-sizes 100000 1000000 --shards 2 4
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import numpy as np
import structlog
from etude.services.controller.drivers.processes import ChildService
from etude.services.workload.generator import SessionGenerator, SyntheticWorkload

from etude.v1 import recommender_pb2, recommender_pb2_grpc


def requests_of(catalog_size: int, count: int) -> list[list[int]]:
    """The first `count` clicks of the workload, each as the session up to that click."""
    workload = SyntheticWorkload(catalog_size=catalog_size, alpha_length=2.0, alpha_clicks=2.0, seed=0)
    batch = SessionGenerator(workload).next_batch(count)
    out: list[list[int]] = []
    start = 0
    for length in batch.lengths.tolist():
        session = batch.item_ids[start : start + length].tolist()
        start += length
        out.extend(session[: i + 1] for i in range(length))
    return out[:count]


def rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def drive(endpoint: str, sessions: list[list[int]], in_flight: int) -> dict[str, float]:
    latencies_ms: list[float] = []
    fanout_us: list[int] = []
    compute_us: list[int] = []
    wire_bytes: list[int] = []
    lookup_calls: list[int] = []
    queue = list(reversed(sessions))
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)

        async def worker() -> None:
            while queue:
                session = queue.pop()
                began = time.perf_counter_ns()
                answer = await stub.Recommend(
                    recommender_pb2.RecommendRequest(item_ids=session, k=21), timeout=30
                )
                latencies_ms.append((time.perf_counter_ns() - began) / 1e6)
                fanout_us.append(answer.timing.shard_fanout_us)
                compute_us.append(answer.timing.shard_compute_us)
                wire_bytes.append(answer.timing.shard_wire_bytes)
                lookup_calls.append(answer.timing.shard_lookup_calls)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    return {
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "fanout_ms": float(np.median(fanout_us)) / 1e3,
        "compute_ms": float(np.median(compute_us)) / 1e3,
        "bytes": float(np.median(wire_bytes)),
        "lookups": float(np.mean(lookup_calls)),
    }


async def deployment(
    folder: Path,
    catalog_size: int,
    shards: int,
    strategy: str,
    model: str,
    sessions: list[list[int]],
    in_flight: int,
) -> dict[str, float]:
    model_flags = ["--model", model, "--catalog-size", str(catalog_size), "--seed", "0"]
    async with AsyncExitStack() as stack:
        children: list[ChildService] = []
        shard_endpoints = []
        for index in range(shards):
            shard = ChildService(
                "shard",
                [
                    *model_flags,
                    "--shard",
                    f"{index}/{shards}",
                    "--strategy",
                    strategy,
                    "--log-level",
                    "warning",
                ],
                folder / f"shard-{catalog_size}-{strategy}-{shards}-{index}.log",
            )
            children.append(shard)
            stack.push_async_callback(shard.stop, 2)
        await asyncio.gather(*(shard.start(startup_timeout_s=300) for shard in children))
        shard_endpoints = [shard.endpoint for shard in children]
        flags = [*model_flags, "--log-level", "warning"]
        if shards:
            flags += ["--catalog-shards", ",".join(shard_endpoints)]
        server = ChildService(
            "inference", flags, folder / f"inference-{catalog_size}-{strategy}-{shards}.log"
        )
        stack.push_async_callback(server.stop, 2)
        endpoint = await server.start(startup_timeout_s=300)
        await drive(endpoint, sessions[:50], in_flight)  # warm-up
        result = await drive(endpoint, sessions, in_flight)
        result["server_mib"] = rss_mib(server.pid)
        result["shard_mib"] = max((rss_mib(shard.pid) for shard in children), default=0.0)
        return result


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--catalog-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--strategies", nargs="+", default=["range", "hash", "popular"])
    parser.add_argument("--model", default="gru4rec")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=1)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"model {args.model}, {args.requests} requests, {args.in_flight} in flight; ms unless noted")
    print(
        f"{'C':>9} {'layout':>12} {'p50':>7} {'p90':>7} {'p99':>7} {'p90 x':>6} {'fan-out':>8} "
        f"{'shard':>7} {'lookups':>7} {'bytes/req':>9} {'router MiB':>10} {'shard MiB':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as folder:
        for catalog_size in args.catalog_sizes:
            sessions = requests_of(catalog_size, args.requests)
            layouts = [(0, "none")] + [(n, s) for n in args.shards for s in args.strategies]
            baseline = None
            for shards, strategy in layouts:
                row = await deployment(
                    Path(folder),
                    catalog_size,
                    shards,
                    strategy if shards else "range",
                    args.model,
                    sessions,
                    args.in_flight,
                )
                baseline = baseline or row
                name = "unsharded" if not shards else f"{shards}x{strategy}"
                print(
                    f"{catalog_size:>9} {name:>12} {row['p50']:7.2f} {row['p90']:7.2f} {row['p99']:7.2f} "
                    f"{row['p90'] / baseline['p90']:6.2f} {row['fanout_ms']:8.2f} {row['compute_ms']:7.2f} "
                    f"{row['lookups']:7.2f} "
                    f"{row['bytes']:9.0f} {row['server_mib']:10.0f} {row['shard_mib']:9.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main())
