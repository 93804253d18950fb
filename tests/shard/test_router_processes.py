"""A router in front of catalog shards, all real processes: it answers what one unsharded server
answers, names a shard that died with UNAVAILABLE, and serves again once the shard is back."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from etude.services.controller.drivers.processes import ChildService

from etude.v1 import recommender_pb2, recommender_pb2_grpc

pytestmark = pytest.mark.slow

CATALOG_SIZE = 30_000
SEED = 11
SESSIONS = [[5], [17, 2_000, 29_999], list(range(100, 160)), [7, 7, 7, 12_345], [29_000, 1, 15_000, 15_001]]


def _model_flags(model: str) -> list[str]:
    return ["--model", model, "--catalog-size", str(CATALOG_SIZE), "--seed", str(SEED)]


@asynccontextmanager
async def _shards_and_router(
    tmp_path: Path, model: str, strategy: str, count: int, extra_shard_flags: list[str] | None = None
) -> AsyncIterator[tuple[str, list[ChildService]]]:
    """`count` shards and a router over them; yields the router's endpoint and the shards."""
    shards = [
        ChildService(
            "shard",
            [
                *_model_flags(model),
                "--shard",
                f"{index}/{count}",
                "--strategy",
                strategy,
                *(extra_shard_flags or []),
            ],
            tmp_path / f"shard-{index}.log",
        )
        for index in range(count)
    ]
    router = None
    try:
        await asyncio.gather(*(shard.start(startup_timeout_s=120) for shard in shards))
        router = ChildService(
            "inference",
            [*_model_flags(model), "--catalog-shards", ",".join(shard.endpoint for shard in shards),
             "--max-batch-delay-ms", "5", "--shard-timeout-s", "2"],
            tmp_path / "router.log",
        )  # fmt: skip
        yield await router.start(startup_timeout_s=120), shards
    finally:
        await asyncio.gather(*(child.stop(grace_s=2) for child in [*shards, *([router] if router else [])]))


async def _answers(
    endpoint: str, sessions: list[list[int]], k: int = 21, candidates: list[list[int]] | None = None
) -> list[recommender_pb2.RecommendResponse]:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        # Concurrently: they share batches on both servers, as they would under load.
        return list(
            await asyncio.gather(
                *(
                    stub.Recommend(
                        recommender_pb2.RecommendRequest(
                            item_ids=s, k=k, candidate_ids=candidates[index] if candidates else ()
                        ),
                        timeout=30,
                    )
                    for index, s in enumerate(sessions)
                )
            )
        )


async def _model_info(endpoint: str) -> recommender_pb2.ModelInfo:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        return await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=10)


def _assert_same_answers(
    sharded: list[recommender_pb2.RecommendResponse], unsharded: list[recommender_pb2.RecommendResponse]
) -> None:
    for got, expected in zip(sharded, unsharded, strict=True):
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
        # Ids agree except where two scores tie within float noise (then either order is exact).
        gaps = np.diff(np.asarray(expected.scores))
        for position, (got_id, expected_id) in enumerate(zip(got.item_ids, expected.item_ids, strict=True)):
            if got_id != expected_id:
                near = [abs(gaps[p]) for p in (position - 1, position) if 0 <= p < len(gaps)]
                assert min(near) < 1e-5, f"item {position}: {got_id} != {expected_id}"


@pytest.mark.parametrize(
    ("model", "strategy", "count"),
    [("gru4rec", "range", 2), ("gru4rec", "popular", 3), ("sasrec", "hash", 2)],
)
async def test_sharded_router_answers_what_one_unsharded_server_answers(
    tmp_path: Path, child_service: Callable[..., object], model: str, strategy: str, count: int
) -> None:
    extra = ["--hot-items", "500"] if strategy == "popular" else []
    async with _shards_and_router(tmp_path, model, strategy, count, extra) as (router, _):
        sharded = await _answers(router, SESSIONS)
        router_info = await _model_info(router)
        async with child_service("inference", _model_flags(model)) as unsharded_endpoint:  # type: ignore[attr-defined]
            unsharded = await _answers(unsharded_endpoint, SESSIONS)
            unsharded_info = await _model_info(unsharded_endpoint)
    _assert_same_answers(sharded, unsharded)
    assert all(answer.timing.shard_fanout_us > 0 for answer in sharded)
    assert all(answer.timing.shard_wire_bytes > 0 for answer in sharded)
    assert all(1 <= answer.timing.shard_lookup_calls <= count for answer in sharded)
    # The router holds none of the item rows: its parameters are the encoder's alone.
    table_values = (CATALOG_SIZE + 1) * unsharded_info.embedding_dim
    assert unsharded_info.parameter_count - router_info.parameter_count == table_values
    assert router_info.details["shard_strategy"] == strategy


async def test_a_router_re_ranks_candidates_as_one_unsharded_server_does(
    tmp_path: Path, child_service: Callable[..., object]
) -> None:
    rng = np.random.default_rng(3)
    # Candidates spread over every shard, a list shorter than k among them; requests of both kinds.
    candidates = [
        rng.choice(np.arange(1, CATALOG_SIZE + 1), size, replace=False).tolist() for size in (50, 7, 300)
    ]
    sessions = SESSIONS[:3]
    async with _shards_and_router(tmp_path, "gru4rec", "hash", 3) as (router, _):
        # At once: re-ranking and full-catalog requests share the router's batches.
        reranked, mixed = await asyncio.gather(
            _answers(router, sessions, k=10, candidates=candidates), _answers(router, SESSIONS[3:], k=10)
        )
        async with child_service("inference", _model_flags("gru4rec")) as unsharded_endpoint:  # type: ignore[attr-defined]
            expected = await _answers(unsharded_endpoint, sessions, k=10, candidates=candidates)
            expected_mixed = await _answers(unsharded_endpoint, SESSIONS[3:], k=10)
    _assert_same_answers(reranked, expected)
    _assert_same_answers(mixed, expected_mixed)
    assert [len(answer.item_ids) for answer in reranked] == [10, 7, 10]
    for answer, allowed in zip(reranked, candidates, strict=True):
        assert set(answer.item_ids) <= set(allowed)


async def test_a_dead_shard_gives_unavailable_naming_it_and_the_router_recovers_when_it_returns(
    tmp_path: Path,
) -> None:
    async with _shards_and_router(tmp_path, "gru4rec", "range", 2) as (router, shards):
        before = await _answers(router, SESSIONS[:2])
        dead = shards[1]
        port = dead.endpoint.rpartition(":")[2]
        assert dead.pid is not None
        dead._process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        await dead.wait_exited()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _answers(router, SESSIONS[:1])
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"catalog shard 1/2 at {dead.endpoint}" in (refused.value.details() or "")
        # The same shard back on its port: the router reconnects within its backoff (<= 1 s).
        revived = ChildService("shard", [*dead.flags, "--port", port], tmp_path / "shard-1-again.log")
        async with AsyncExitStack() as stack:
            await revived.start(startup_timeout_s=120)
            stack.push_async_callback(revived.stop, 2)
            for _ in range(50):
                try:
                    after = await _answers(router, SESSIONS[:2])
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    await asyncio.sleep(0.2)
            else:
                pytest.fail("the router did not recover within 10 s of the shard's return")
    assert [list(a.item_ids) for a in after] == [list(b.item_ids) for b in before]
