"""Building the item rows costs about the table itself, real processes: a shard of each mapping
strategy and one unsharded server, at a catalog large enough that the rows dominate the build.

A shard used to generate its rows into a temporary tensor and copy them into its table, so its
build peaked at ~2.1x the table (and two shards held no larger a catalog than one server); the
rows are now generated into the table itself, and the build's growth stays near 1.0-1.2x.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.processes import ChildService
from etude.services.report.capacity import bytes_per_row

from etude.v1 import environment_pb2, recommender_pb2, recommender_pb2_grpc, shard_pb2, shard_pb2_grpc

pytestmark = pytest.mark.slow

# 3M items at d = 42 (gru4rec): 481 MiB of fp32 rows in one server, ~240 MiB in each of two
# shards; what a process needs whatever the catalog (tens of MiB) is measured before the rows.
CATALOG_SIZE = 3_000_000
MODEL_FLAGS = ["--model", "gru4rec", "--catalog-size", str(CATALOG_SIZE), "--seed", "4"]
# Above what an in-place build measures (1.01x unsharded, 1.02-1.19x a shard at 4M items)
# and well below a build through a full temporary copy of the rows (>= 2x).
MAX_BUILD_GROWTH_PER_TABLE_BYTE = 1.3


async def _shard_memory(endpoint: str) -> environment_pb2.ServerMemory:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = shard_pb2_grpc.ShardServiceStub(channel)
        return (await stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=30)).memory


async def _server_memory(endpoint: str) -> environment_pb2.ServerMemory:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        return (await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=30)).memory


def _build_growth_per_table_byte(memory: environment_pb2.ServerMemory) -> float:
    """(peak resident right after building the rows - resident before them) / bytes of the rows."""
    assert memory.table_bytes > 200 * 2**20  # the rows dominate: the ratio is not noise
    return (memory.built_peak_resident_bytes - memory.startup_resident_bytes) / memory.table_bytes


async def test_a_shards_build_peaks_near_its_table_for_every_strategy_as_one_servers_does(
    tmp_path: Path,
) -> None:
    layouts = {
        "range": ["--strategy", "range"],
        "hash": ["--strategy", "hash"],
        "popular": ["--strategy", "popular", "--hot-items", "20000"],
    }
    shards = {
        strategy: ChildService(
            "shard", [*MODEL_FLAGS, "--shard", "1/2", *flags], tmp_path / f"shard-{strategy}.log"
        )
        for strategy, flags in layouts.items()
    }
    unsharded = ChildService("inference", MODEL_FLAGS, tmp_path / "inference.log")
    try:
        endpoints = await asyncio.gather(*(shard.start(startup_timeout_s=120) for shard in shards.values()))
        shard_memory = dict(zip(layouts, await asyncio.gather(*map(_shard_memory, endpoints)), strict=True))
        await asyncio.gather(*(shard.stop(grace_s=2) for shard in shards.values()))
        whole = await _server_memory(await unsharded.start(startup_timeout_s=120))
    finally:
        await asyncio.gather(*(child.stop(grace_s=2) for child in [*shards.values(), unsharded]))

    growth = {strategy: _build_growth_per_table_byte(memory) for strategy, memory in shard_memory.items()}
    growth["unsharded"] = _build_growth_per_table_byte(whole)
    assert all(ratio < MAX_BUILD_GROWTH_PER_TABLE_BYTE for ratio in growth.values()), growth
    # The replicated hot rows are in the popular shard's table, built in place like the rest.
    assert shard_memory["popular"].rows_held > shard_memory["hash"].rows_held
    # So a row costs a shard about what it costs one server: N shards hold ~N times the catalog.
    per_row_whole = bytes_per_row(whole)
    assert per_row_whole is not None
    for strategy, memory in shard_memory.items():
        per_row = bytes_per_row(memory)
        assert per_row is not None and per_row < MAX_BUILD_GROWTH_PER_TABLE_BYTE * per_row_whole, strategy
