"""Throughput and latency against the number of model executors (`etude serve inference --executors N`).

For each N: a real inference service with N executors (torch threads split cores / N unless
`--threads`), its capacity (closed loop, OK answers/s) and, at one open-loop rate offered to
every N (`--rate`, default half the capacity measured with the first N), the accepted requests'
p50/p90/p99 from their intended send time. On a GPU, `--device cuda` gives each executor its
own CUDA stream.

    .venv/bin/python benchmarks/bench_executors.py [--executors 1 2 --catalog-size 1000000]
"""

from __future__ import annotations

import argparse
import asyncio

from bench_overload import capacity_per_s, inference_service, offered_load


def flags(args: argparse.Namespace, executors: int) -> list[str]:
    return [
        "--model", args.model, "--catalog-size", str(args.catalog_size), "--runtime", args.runtime,
        "--device", args.device, "--executors", str(executors), "--threads", str(args.threads),
    ]  # fmt: skip


async def measure(target: str, args: argparse.Namespace, executors: int, rate_per_s: float) -> float:
    capacity = await capacity_per_s(target, args.catalog_size, args.concurrency, args.capacity_s)
    rate = rate_per_s or capacity / 2
    summary = await offered_load(target, args.catalog_size, rate, args.ramp_s, args.hold_s, args.deadline_ms)
    latency = summary.latency_from_intended
    print(
        f"{executors:>9d}  {capacity:>12.1f}  {rate:>8.0f}  {summary.achieved_hold_rate_per_s:>8.1f}  "
        f"{latency.p50_ms:>7.1f} / {latency.p90_ms:>7.1f} / {latency.p99_ms:>7.1f}  "
        f"{summary.requests_failed:>6d}",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="gru4rec")
    parser.add_argument("--catalog-size", type=int, default=1_000_000)
    parser.add_argument("--runtime", default="jit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per executor (0 = cores / N)")
    parser.add_argument("--rate", type=float, default=0.0, help="open-loop rate (0: half the first capacity)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--capacity-s", type=float, default=8.0)
    parser.add_argument("--ramp-s", type=int, default=2)
    parser.add_argument("--hold-s", type=int, default=8)
    parser.add_argument("--deadline-ms", type=int, default=1000)
    args = parser.parse_args()
    print(
        f"{args.model} at {args.catalog_size:,} items, {args.runtime}, {args.device}; capacity: closed "
        f"loop, {args.concurrency} callers, {args.capacity_s:g} s; latency from the intended send, OK only"
    )
    print("executors  capacity ok/s  rate/s   ok/s     p50 / p90 / p99 ms         failed")
    rate = args.rate
    for executors in args.executors:
        with inference_service(flags(args, executors)) as target:
            rate = asyncio.run(measure(target, args, executors, rate))


if __name__ == "__main__":
    main()
