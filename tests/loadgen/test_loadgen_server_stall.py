"""No coordinated omission: a real gRPC server that stalls for 200 ms shows in the latency
measured from the intended send time (the loadgen library against a server on a loopback port)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from etude.services.loadgen.client import GrpcRecommendClient, open_channel
from etude.services.loadgen.generator import LoadGenerator, Session

from etude.serving import ServiceHost
from etude.v1 import loadgen_pb2, recommender_pb2, recommender_pb2_grpc

STALL_S = 0.2


class StallingRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Answers at once, except that every request arriving during one 200 ms window waits for
    the window's end: the server stalls, as a garbage-collection pause or a slow batch would."""

    def __init__(self, stall_after_s: float) -> None:
        self.started = time.monotonic()
        self.stall_from = self.started + stall_after_s
        self.stall_until = self.stall_from + STALL_S

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        now = time.monotonic()
        if self.stall_from <= now < self.stall_until:
            await asyncio.sleep(self.stall_until - now)
        return recommender_pb2.RecommendResponse(item_ids=[1], scores=[0.0])


async def endless_sessions() -> AsyncIterator[Session]:
    index = 0
    while True:
        yield Session(str(index), [1, 2, 3])
        index += 1


async def test_a_200_ms_server_stall_shows_in_the_intended_time_percentiles() -> None:
    servicer = StallingRecommender(stall_after_s=1.5)
    host = ServiceHost(
        ["etude.v1.RecommenderService"],
        lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server),
    )
    port = await host.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            profile = loadgen_pb2.LoadProfile(target_rate_per_s=100, ramp_duration_s=0, hold_duration_s=3)
            summary = await LoadGenerator(GrpcRecommendClient(channel), endless_sessions(), profile).run()
    finally:
        await host.stop(0)

    assert summary.requests_failed == 0 and summary.requests_not_sent == 0
    # About 20 of 300 requests (7%) arrive during the stall and wait up to 200 ms for its end.
    intended = summary.latency_from_intended
    assert intended.max_ms >= 150
    assert intended.p99_ms >= 100
    assert intended.p50_ms < 20  # the rest of the run was fast: the stall is not smeared out
    assert intended.p99_ms >= summary.latency_from_actual.p99_ms
