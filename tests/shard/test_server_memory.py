"""Each server measures its own memory, real processes: two shards, their router and one unsharded
server of the same catalog, large enough that the item rows dominate what a server holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.processes import ChildService
from etude.services.inference.memory import own_memory

from etude.v1 import environment_pb2, recommender_pb2, recommender_pb2_grpc

pytestmark = pytest.mark.slow

# 2M items at d = 38: 304 MB of fp32 rows in one server, 152 MB in each of two shards.
CATALOG_SIZE = 2_000_000
MODEL_FLAGS = ["--model", "gru4rec", "--catalog-size", str(CATALOG_SIZE), "--seed", "3"]


async def _model_info(endpoint: str) -> recommender_pb2.ModelInfo:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        return await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=30)


def _assert_measured(memory: environment_pb2.ServerMemory) -> None:
    assert 0 < memory.startup_resident_bytes < memory.built_resident_bytes <= memory.built_peak_resident_bytes
    assert memory.built_peak_resident_bytes <= memory.peak_resident_bytes
    assert 0 < memory.resident_bytes <= memory.peak_resident_bytes
    # The rows were built between the first two readings and are still held.
    assert memory.built_resident_bytes - memory.startup_resident_bytes >= 0.9 * memory.table_bytes
    assert memory.resident_bytes - memory.startup_resident_bytes >= 0.9 * memory.table_bytes


def test_own_memory_reads_the_kernels_resident_and_peak_figures() -> None:
    before = own_memory()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident now
    after = own_memory()
    assert after.resident_bytes - before.resident_bytes >= 60 * 2**20
    assert after.peak_resident_bytes >= after.resident_bytes >= before.resident_bytes
    del block


async def test_shards_router_and_one_server_report_measured_memory_that_follows_their_rows(
    tmp_path: Path,
) -> None:
    shards = [
        ChildService("shard", [*MODEL_FLAGS, "--shard", f"{index}/2"], tmp_path / f"shard-{index}.log")
        for index in range(2)
    ]
    unsharded = ChildService("inference", MODEL_FLAGS, tmp_path / "inference.log")
    router: ChildService | None = None
    try:
        await asyncio.gather(*(shard.start(startup_timeout_s=300) for shard in shards))
        router = ChildService(
            "inference",
            [*MODEL_FLAGS, "--catalog-shards", ",".join(shard.endpoint for shard in shards)],
            tmp_path / "router.log",
        )
        await router.start(startup_timeout_s=300)
        routed = await _model_info(router.endpoint)
        await router.stop(grace_s=2)
        await asyncio.gather(*(shard.stop(grace_s=2) for shard in shards))
        # One at a time on this machine: the unsharded server alone, as it would run.
        one = await _model_info(await unsharded.start(startup_timeout_s=300))
    finally:
        await asyncio.gather(
            *(child.stop(grace_s=2) for child in [*shards, unsharded, *([router] if router else [])])
        )

    dim = one.embedding_dim
    whole = one.memory
    assert whole.server == "inference" and whole.rows_held == CATALOG_SIZE + 1
    assert whole.table_bytes >= (CATALOG_SIZE + 1) * dim * 4
    _assert_measured(whole)

    assert [memory.server for memory in routed.shard_memory] == ["shard 0/2", "shard 1/2"]
    for memory in routed.shard_memory:
        assert memory.rows_held == CATALOG_SIZE // 2
        assert memory.table_bytes >= (CATALOG_SIZE // 2 + 1) * dim * 4
        _assert_measured(memory)
        # Half the rows: a shard needs less memory than the server holding them all.
        assert memory.peak_resident_bytes < whole.peak_resident_bytes
        assert memory.resident_bytes < whole.resident_bytes

    router_memory = routed.memory
    assert router_memory.server == "router"
    assert router_memory.rows_held == 0 and router_memory.table_bytes == 0
    # No item table: a router holds less than a shard, which holds less than one whole server.
    assert router_memory.resident_bytes < min(memory.resident_bytes for memory in routed.shard_memory)
    assert router_memory.peak_resident_bytes < whole.peak_resident_bytes
