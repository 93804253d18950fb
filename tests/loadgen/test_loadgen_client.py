"""The gRPC RecommendClient: answers and RPC failures both come back as an Outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from etude.services.loadgen.client import (
    GrpcRecommendClient,
    TargetUnavailable,
    open_channel,
    wait_until_ready,
)
from loadgen_fakes import FakeRecommender

from etude.serving import ServiceHost, service_full_name
from etude.v1 import recommender_pb2, recommender_pb2_grpc


@pytest.fixture
async def recommender() -> AsyncIterator[tuple[FakeRecommender, str]]:
    fake = FakeRecommender(delay_s=0.0)
    host = ServiceHost(
        service_names=[service_full_name(recommender_pb2, "RecommenderService")],
        register=lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(fake, server),
    )
    port = await host.start()
    yield fake, f"127.0.0.1:{port}"
    await host.stop(0)


@pytest.mark.parametrize("request_spans", [True, False])
async def test_an_answer_carries_the_server_timing(
    recommender: tuple[FakeRecommender, str], request_spans: bool
) -> None:
    fake, target = recommender
    async with open_channel(target) as channel:
        client = GrpcRecommendClient(channel, request_spans=request_spans)
        outcome = await client.recommend("s1", [3, 4], 5, 1.0)
    assert outcome.status == "OK"
    assert (outcome.queue_us, outcome.inference_us, outcome.batch_size) == (50, 150, 1)
    assert outcome.server_total_us == 250
    assert fake.requests[0].session_id == "s1"
    assert list(fake.requests[0].item_ids) == [3, 4]
    assert fake.requests[0].k == 5


@pytest.mark.parametrize("request_spans", [True, False])
async def test_a_slow_answer_is_deadline_exceeded_not_an_exception(
    recommender: tuple[FakeRecommender, str], request_spans: bool
) -> None:
    fake, target = recommender
    fake.delay_s = 0.5
    async with open_channel(target) as channel:
        client = GrpcRecommendClient(channel, request_spans=request_spans)
        outcome = await client.recommend("s1", [1], 5, 0.05)
    assert outcome.status == "DEADLINE_EXCEEDED"
    assert outcome.server_total_us == 0


async def test_an_unreachable_server_is_unavailable_not_an_exception() -> None:
    async with open_channel("127.0.0.1:1") as channel:
        outcome = await GrpcRecommendClient(channel).recommend("s1", [1], 5, 1.0)
    assert outcome.status == "UNAVAILABLE"


async def test_waiting_for_an_unreachable_target_fails_naming_the_target() -> None:
    async with open_channel("127.0.0.1:1") as channel:
        with pytest.raises(TargetUnavailable, match=r"target: no server reachable at '127\.0\.0\.1:1'"):
            await wait_until_ready(channel, "127.0.0.1:1", 0.2)
