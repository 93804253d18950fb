"""A re-ranking load (LoadProfile.candidates_per_request): candidate lists drawn by the workload's
item popularity, the session's next click among them, sent with every request; through the
generator with a recording client, and through a real loadgen server against a real inference
server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import grpc
import numpy as np
import pytest
from etude.services.inference.batcher import DynamicBatcher
from etude.services.inference.recommender import Recommendation, Recommender, RecommenderConfig, SessionQuery
from etude.services.inference.server import RecommenderServicer
from etude.services.loadgen.candidates import CandidateSampler
from etude.services.loadgen.generator import OK, LoadGenerator, OnDone, Outcome, Session
from etude.services.loadgen.server import LoadGeneratorServicer
from etude.services.loadgen.spec import InvalidLoadSpec, validate_load_spec
from etude.services.workload.generator import ItemPopularity, SyntheticWorkload
from loadgen_fakes import sessions_from

from etude.serving import ServiceHost, service_full_name
from etude.v1 import loadgen_pb2, loadgen_pb2_grpc, recommender_pb2, recommender_pb2_grpc, workload_pb2

CATALOG_SIZE = 400
WORKLOAD = workload_pb2.WorkloadSpec(
    catalog_size=CATALOG_SIZE,
    exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.5),
    seed=5,
)


def popularity() -> ItemPopularity:
    return ItemPopularity.for_workload(SyntheticWorkload.from_proto(WORKLOAD))


def test_a_list_holds_distinct_catalog_items_and_the_next_click() -> None:
    sampler = CandidateSampler(popularity(), 50, seed=1)
    for next_item in (None, 1, 399, 400):
        candidates = sampler.draw(next_item)
        assert len(candidates) == len(set(candidates)) == 50
        assert all(1 <= item <= CATALOG_SIZE for item in candidates)
        if next_item is not None:
            assert next_item in candidates


def test_lists_follow_item_popularity_and_repeat_for_a_seed() -> None:
    table = popularity()
    counts = table.click_counts
    draws = Counter(item for _ in range(300) for item in CandidateSampler(table, 10, seed=_).draw())
    head, tail = np.argsort(counts)[-10:] + 1, np.argsort(counts)[:100] + 1
    # The ten most clicked items are drawn far more often than the hundred least clicked.
    assert sum(draws[int(i)] for i in head) > 5 * sum(draws[int(i)] for i in tail)
    assert CandidateSampler(table, 30, seed=9).draw(4) == CandidateSampler(table, 30, seed=9).draw(4)


def test_a_list_longer_than_the_items_ever_clicked_is_filled_with_unclicked_ones() -> None:
    counts = np.zeros(1000, dtype=np.int64)
    counts[[9, 99]] = [50, 5]  # only items 10 and 100 are ever drawn by popularity
    candidates = CandidateSampler(ItemPopularity(counts), 30, seed=4).draw()
    assert len(set(candidates)) == 30 and {10, 100} <= set(candidates)
    assert all(1 <= item <= 1000 for item in candidates)


def test_a_list_as_long_as_the_catalog_is_every_item_once() -> None:
    assert sorted(CandidateSampler(popularity(), CATALOG_SIZE, seed=2).draw(7)) == list(
        range(1, CATALOG_SIZE + 1)
    )


class RecordingClient:
    """Answers at once; records each request's prefix and candidate list."""

    transport = "fake"

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[int], list[int]]] = []

    def start(
        self,
        session_id: str,
        item_ids: Sequence[int],
        k: int,
        timeout_s: float,
        on_done: OnDone,
        candidate_ids: Sequence[int] = (),
    ) -> None:
        self.requests.append((session_id, list(item_ids), list(candidate_ids)))
        on_done(Outcome(OK))

    def cancel_all(self) -> None:
        pass


async def test_every_request_carries_a_list_with_its_sessions_next_click_and_the_summary_says_so() -> None:
    client = RecordingClient()
    sessions = [Session(str(index), [index + 1, index + 2, index + 3]) for index in range(10)]
    generator = LoadGenerator(
        client,
        sessions_from(sessions),
        loadgen_pb2.LoadProfile(target_rate_per_s=30, hold_duration_s=1),
        candidates=CandidateSampler(popularity(), 8, seed=3),
    )
    summary = await generator.run()
    assert summary.candidates_per_request == 8
    assert len(client.requests) == 30
    whole = {session.session_id: list(session.item_ids) for session in sessions}
    for session_id, prefix, candidates in client.requests:
        assert len(set(candidates)) == 8
        clicks = whole[session_id]
        if len(prefix) < len(clicks):
            assert clicks[len(prefix)] in candidates


async def test_a_full_catalog_load_sends_no_candidates_and_says_0() -> None:
    client = RecordingClient()
    generator = LoadGenerator(
        client,
        sessions_from([Session("1", [1, 2])]),
        loadgen_pb2.LoadProfile(target_rate_per_s=2, hold_duration_s=1),
    )
    summary = await generator.run()
    assert summary.candidates_per_request == 0
    assert [candidates for _, _, candidates in client.requests] == [[], []]


@pytest.mark.parametrize(
    ("candidates", "workload", "message"),
    [
        (-1, WORKLOAD, "must be >= 0"),
        (401, WORKLOAD, "more than workload.catalog_size = 400"),
        (20_000, WORKLOAD, "must be in [0, 10,000]"),
        (
            5,
            workload_pb2.WorkloadSpec(catalog_size=400, replay=workload_pb2.ReplaySource(path="log.csv")),
            "needs a synthetic workload",
        ),
    ],
)
def test_a_bad_candidate_count_is_refused_naming_the_field(
    candidates: int, workload: workload_pb2.WorkloadSpec, message: str
) -> None:
    spec = loadgen_pb2.LoadSpec(
        target="127.0.0.1:1",
        profile=loadgen_pb2.LoadProfile(
            target_rate_per_s=5, hold_duration_s=1, candidates_per_request=candidates
        ),
        workload=workload,
    )
    with pytest.raises(InvalidLoadSpec) as refused:
        validate_load_spec(spec)
    assert refused.value.field == "profile.candidates_per_request"
    assert message in str(refused.value)


@pytest.mark.parametrize("transport", ["unary", "stream", "h2"])
async def test_a_real_loadgen_sends_re_ranking_requests_a_real_inference_server_answers(
    transport: str,
) -> None:
    recommender = Recommender(RecommenderConfig("gru4rec", CATALOG_SIZE, seed=1))
    seen: list[SessionQuery] = []

    def recording(queries: list[SessionQuery]) -> list[Recommendation]:
        seen.extend(queries)
        return recommender.recommend_batch(queries)

    batcher = DynamicBatcher(recording)
    inference = ServiceHost(
        [service_full_name(recommender_pb2, "RecommenderService")],
        lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(
            RecommenderServicer(recommender, batcher), server
        ),
    )
    servicer = LoadGeneratorServicer(connect_timeout_s=5.0)
    loadgen = ServiceHost(
        [service_full_name(loadgen_pb2, "LoadGeneratorService")],
        lambda server: loadgen_pb2_grpc.add_LoadGeneratorServiceServicer_to_server(servicer, server),
    )
    await batcher.start()
    inference_port, loadgen_port = await inference.start(), await loadgen.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{loadgen_port}") as channel:
            spec = loadgen_pb2.LoadSpec(
                target=f"127.0.0.1:{inference_port}",
                profile=loadgen_pb2.LoadProfile(
                    target_rate_per_s=20, hold_duration_s=2, k=5, candidates_per_request=25
                ),
                workload=WORKLOAD,
                transport=transport,
            )
            updates = [
                update async for update in loadgen_pb2_grpc.LoadGeneratorServiceStub(channel).Run(spec)
            ]
    finally:
        await loadgen.stop(0)
        await inference.stop(0)
        await batcher.stop(drain=False)
    summary = updates[-1].summary
    assert summary.candidates_per_request == 25
    assert summary.requests_sent == summary.requests_ok == 40
    assert len(seen) == 40
    for query in seen:
        assert query.candidate_ids is not None and len(set(query.candidate_ids.tolist())) == 25
        assert query.k == 5
