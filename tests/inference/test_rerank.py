"""Candidate re-ranking (RecommendRequest.candidate_ids) through a real gRPC server on port 0: the
answer is the full-catalog ranking filtered to the candidates, with the full pass's scores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import numpy as np
import pytest
from etude.services.inference.batcher import DynamicBatcher
from etude.services.inference.precision import cpu_bf16_support
from etude.services.inference.recommender import Recommender, RecommenderConfig
from etude.services.inference.server import RecommenderServicer

from etude.limits import MAX_CANDIDATES
from etude.serving import ServiceHost, service_full_name
from etude.v1 import recommender_pb2, recommender_pb2_grpc

CATALOG_SIZE = 300
SERVICE = service_full_name(recommender_pb2, "RecommenderService")
# Scores of one item from the full pass and from its gathered row: the same fp32 products,
# summed in another order.
SCORE_TOLERANCE = dict(rel=1e-5, abs=1e-6)

# GRU4Rec and SASRec use the shared head, CORE its own cosine head; bf16 scores candidates
# against the fp32 rows the full pass re-scores with.
RERANKING_MODELS = [
    ("gru4rec", "fp32"),
    ("sasrec", "fp32"),
    ("core", "fp32"),
    pytest.param("gru4rec", "bf16", marks=pytest.mark.skipif(not cpu_bf16_support()[0], reason="no bf16")),
    pytest.param("core", "bf16", marks=pytest.mark.skipif(not cpu_bf16_support()[0], reason="no bf16")),
]

_recommenders: dict[tuple[str, str], Recommender] = {}


def recommender_for(model: str, precision: str = "fp32") -> Recommender:
    """One recommender per (model, precision) for the module: building one warms it up."""
    key = (model, precision)
    if key not in _recommenders:
        _recommenders[key] = Recommender(
            RecommenderConfig(model, CATALOG_SIZE, precision=precision, seed=3, max_candidates=100)
        )
    return _recommenders[key]


@asynccontextmanager
async def serving(
    recommender: Recommender, **batching: object
) -> AsyncIterator[recommender_pb2_grpc.RecommenderServiceStub]:
    batcher = DynamicBatcher(recommender.recommend_batch, **batching)  # type: ignore[arg-type]
    servicer = RecommenderServicer(recommender, batcher)
    host = ServiceHost(
        [SERVICE],
        lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server),
    )
    await batcher.start()
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield recommender_pb2_grpc.RecommenderServiceStub(channel)
    finally:
        await host.stop(0)
        await batcher.stop(drain=False)


def request(
    item_ids: Sequence[int], k: int = 0, candidate_ids: Sequence[int] = ()
) -> recommender_pb2.RecommendRequest:
    return recommender_pb2.RecommendRequest(
        session_id="s", item_ids=list(item_ids), k=k, candidate_ids=list(candidate_ids)
    )


def sessions_and_candidates(count: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(1, CATALOG_SIZE + 1, size=int(rng.integers(1, 40))).tolist(),
            rng.choice(
                np.arange(1, CATALOG_SIZE + 1), size=int(rng.integers(1, 100)), replace=False
            ).tolist(),
        )
        for _ in range(count)
    ]


def assert_full_ranking_filtered(
    answer: recommender_pb2.RecommendResponse,
    full: recommender_pb2.RecommendResponse,
    candidates: Sequence[int],
    k: int,
) -> None:
    """`answer` is `full` (the whole catalog ranked) restricted to `candidates`, cut at k: the same
    items in the same order with the same scores; two items may swap only where their scores tie."""
    full_score = dict(zip(full.item_ids, full.scores, strict=True))
    wanted = set(candidates)
    expected = [
        (item, score) for item, score in zip(full.item_ids, full.scores, strict=True) if item in wanted
    ][:k]
    assert len(answer.item_ids) == len(expected) == min(k, len(candidates))
    for item, score in zip(answer.item_ids, answer.scores, strict=True):
        assert item in wanted
        assert score == pytest.approx(full_score[item], **SCORE_TOLERANCE)
    for position, (item, score) in enumerate(expected):
        if answer.item_ids[position] != item:
            assert answer.scores[position] == pytest.approx(score, **SCORE_TOLERANCE), position


@pytest.mark.parametrize(("model", "precision"), RERANKING_MODELS)
async def test_candidate_ranking_equals_the_full_ranking_filtered_to_the_candidates(
    model: str, precision: str
) -> None:
    recommender = recommender_for(model, precision)
    async with serving(recommender) as stub:
        for session, candidates in sessions_and_candidates(8, seed=len(model)):
            full = await stub.Recommend(request(session, k=CATALOG_SIZE))
            answer = await stub.Recommend(request(session, k=10, candidate_ids=candidates))
            assert_full_ranking_filtered(answer, full, candidates, 10)


@pytest.mark.parametrize(("model", "precision"), RERANKING_MODELS)
async def test_a_reduced_precision_candidate_gets_the_score_the_full_top_k_gives_it(
    model: str, precision: str
) -> None:
    """The catalog's top 21 (reduced precision picks, fp32 re-scores) sent back as candidates:
    the same items, order and scores."""
    recommender = recommender_for(model, precision)
    async with serving(recommender) as stub:
        for session, _ in sessions_and_candidates(5, seed=7):
            top = await stub.Recommend(request(session))
            shuffled = np.random.default_rng(1).permutation(list(top.item_ids)).tolist()
            answer = await stub.Recommend(request(session, candidate_ids=shuffled))
            assert_full_ranking_filtered(answer, top, shuffled, 21)


async def test_k_above_the_number_of_candidates_answers_every_candidate_best_first() -> None:
    async with serving(recommender_for("gru4rec")) as stub:
        full = await stub.Recommend(request([4, 8, 15], k=CATALOG_SIZE))
        answer = await stub.Recommend(request([4, 8, 15], k=50, candidate_ids=[16, 23, 42]))
        default_k = await stub.Recommend(request([4, 8, 15], candidate_ids=[16, 23, 42]))
    assert_full_ranking_filtered(answer, full, [16, 23, 42], 50)
    assert list(default_k.item_ids) == list(answer.item_ids)


async def test_one_batch_mixing_candidate_and_full_catalog_requests_answers_each_correctly() -> None:
    recommender = recommender_for("gru4rec")
    pairs = sessions_and_candidates(6, seed=11)
    async with serving(recommender) as stub:
        alone = [await stub.Recommend(request(session, k=CATALOG_SIZE)) for session, _ in pairs]
    # The batch is cut only when all six are in (size 6, a delay far longer than the test).
    async with serving(recommender, max_batch_size=len(pairs), max_batch_delay_ms=30_000) as stub:
        answers = await asyncio.gather(
            *(
                stub.Recommend(request(session, k=10, candidate_ids=candidates if index % 2 else ()))
                for index, (session, candidates) in enumerate(pairs)
            )
        )
    for index, (answer, full, (_, candidates)) in enumerate(zip(answers, alone, pairs, strict=True)):
        assert answer.timing.batch_size == len(pairs)
        if index % 2:
            assert_full_ranking_filtered(answer, full, candidates, 10)
        else:
            assert_full_ranking_filtered(answer, full, list(range(1, CATALOG_SIZE + 1)), 10)


async def test_noop_ranks_candidates_as_its_full_ranking_does_by_item_id() -> None:
    async with serving(recommender_for("noop")) as stub:
        answer = await stub.Recommend(request([1], k=3, candidate_ids=[90, 7, 300, 12]))
    assert list(answer.item_ids) == [7, 12, 90]
    assert list(answer.scores) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("candidate_ids", "message"),
    [
        ([5, 0, 6], "candidate_ids[1] = 0 is outside 1..300"),
        ([301], "candidate_ids[0] = 301 is outside 1..300"),
        ([9, 4, 7, 4, 9], "candidate_ids[3] = 4 repeats candidate_ids[1]"),
        (list(range(1, 102)), "candidate_ids has 101 ids, more than max_candidates = 100"),
    ],
)
async def test_bad_candidates_are_invalid_argument_naming_the_field(
    candidate_ids: list[int], message: str
) -> None:
    async with serving(recommender_for("gru4rec")) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Recommend(request([1, 2], k=5, candidate_ids=candidate_ids))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (refused.value.details() or "")
        still = await stub.Recommend(request([1, 2], k=5, candidate_ids=[3, 4]))
    assert len(still.item_ids) == 2


async def test_repeatnet_refuses_candidates_saying_why_and_reports_max_candidates_0() -> None:
    async with serving(recommender_for("repeatnet")) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Recommend(request([1, 2], k=5, candidate_ids=[3, 4]))
        info = await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest())
        full = await stub.Recommend(request([1, 2], k=5))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details.startswith("candidate_ids") and "normalised over the whole catalog" in details
    assert info.max_candidates == 0
    assert len(full.item_ids) == 5


async def test_model_info_states_the_candidate_limit() -> None:
    async with serving(recommender_for("core")) as stub:
        info = await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest())
    assert info.max_candidates == 100 <= MAX_CANDIDATES
