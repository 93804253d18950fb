"""Memory per server, measured: one unsharded inference server and each shard of N, for every
layout asked for, and the largest catalog each configuration holds at 8 GiB per server.

Each server runs as a real process (`etude serve inference` / `etude serve shard`), one at a time
(their readings are their own even on a shared machine), and reports its `ServerMemory` (VmRSS
and VmHWM before its tables and right after building them, the table bytes it allocated, the
rows it holds). Printed per server: the build's growth over its tables (1.0x: nothing but the
table; 2x: a temporary copy as large as the table), bytes per row at the build peak, and per
configuration the largest catalog at 8 GiB per server as the report derives it
(services/report/capacity.py).

    .venv/bin/python benchmarks/bench_shard_memory.py [--catalog-size 4000000] [--model gru4rec]
        [--shards 2 4] [--strategies range hash popular] [--hot-items 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import grpc
from etude.services.controller.drivers.processes import ChildService
from etude.services.report.capacity import bytes_per_row, largest_catalog

from etude.v1 import (
    environment_pb2,
    experiment_pb2,
    recommender_pb2,
    recommender_pb2_grpc,
    shard_pb2,
    shard_pb2_grpc,
)

STARTUP_TIMEOUT_S = 600.0
SEED = 3


async def measured_memory(service: str, flags: list[str], log_file: Path) -> environment_pb2.ServerMemory:
    """Starts one server, asks it for its ServerMemory, stops it."""
    child = ChildService(service, flags, log_file)
    try:
        endpoint = await child.start(startup_timeout_s=STARTUP_TIMEOUT_S)
        async with grpc.aio.insecure_channel(endpoint) as channel:
            if service == "shard":
                shard_info = await shard_pb2_grpc.ShardServiceStub(channel).GetShardInfo(
                    shard_pb2.GetShardInfoRequest(), timeout=60
                )
                return shard_info.memory
            model_info = await recommender_pb2_grpc.RecommenderServiceStub(channel).GetModelInfo(
                recommender_pb2.GetModelInfoRequest(), timeout=60
            )
            return model_info.memory
    finally:
        await child.stop(grace_s=2)


def items(count: int | None) -> str:
    return f"{count:,} items" if count is not None else "- (not measured)"


def print_server(name: str, memory: environment_pb2.ServerMemory) -> None:
    growth_bytes = memory.built_peak_resident_bytes - memory.startup_resident_bytes
    growth = growth_bytes / memory.table_bytes if memory.table_bytes else float("nan")
    per_row = bytes_per_row(memory)
    print(
        f"   {name:<14} rows {memory.rows_held:>11,}  tables {memory.table_bytes / 2**20:8.1f} MiB  "
        f"build growth {growth_bytes / 2**20:8.1f} MiB = {growth:4.2f}x tables  "
        f"{f'{per_row:6.1f}' if per_row is not None else '     -'} B/row at the build peak"
    )


async def main(args: argparse.Namespace) -> None:
    flags = ["--model", args.model, "--catalog-size", str(args.catalog_size), "--seed", str(SEED)]
    print(
        f"{args.model}, {args.catalog_size:,} items; each server alone in its own process; "
        "largest catalog at 8 GiB per server from the measured bytes per row"
    )
    with tempfile.TemporaryDirectory() as name:
        logs = Path(name)
        one = await measured_memory("inference", flags, logs / "inference.log")
        trial = experiment_pb2.Trial(catalog_size=args.catalog_size)
        print(f"\none server: largest catalog {items(largest_catalog(trial, [one]))}")
        print_server("inference", one)
        for strategy in args.strategies:
            extra = ["--strategy", strategy]
            if strategy == "popular":
                extra += ["--hot-items", str(args.hot_items)]
            for shards in args.shards:
                readings = [
                    await measured_memory(
                        "shard", [*flags, "--shard", f"{index}/{shards}", *extra], logs / f"shard-{index}.log"
                    )
                    for index in range(shards)
                ]
                trial = experiment_pb2.Trial(catalog_size=args.catalog_size)
                trial.hardware.catalog_shards = shards
                trial.hardware.shard_strategy = strategy
                largest = items(largest_catalog(trial, readings))
                print(f"\n{shards} shards ({strategy}): largest catalog {largest}")
                for index, memory in enumerate(readings):
                    print_server(f"shard {index}/{shards}", memory)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog-size", type=int, default=4_000_000)
    parser.add_argument("--model", default="gru4rec")
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--strategies", nargs="+", default=["range", "hash", "popular"])
    parser.add_argument(
        "--hot-items", type=int, default=10_000, help="replicated items of the popular layout"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
