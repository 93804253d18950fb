"""What one caller can make the inference service hold is bounded: a RecommendStream is not read
past `max_stream_in_flight` unanswered requests, and the queue refuses a request that would take
the bytes of the waiting requests past `max_queue_bytes`. Real servers on port 0."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from etude.services.cli import main as etude_main
from etude.services.inference.batcher import DynamicBatcher
from etude.services.inference.recommender import Recommendation, Recommender, RecommenderConfig, SessionQuery
from etude.services.inference.server import RecommenderServicer

from etude.serving import ServiceHost, service_full_name
from etude.v1 import recommender_pb2, recommender_pb2_grpc

CATALOG_SIZE = 100
SERVICE = service_full_name(recommender_pb2, "RecommenderService")
HANG_S = 20.0


@pytest.fixture(scope="module")
def recommender() -> Recommender:
    return Recommender(RecommenderConfig("noop", CATALOG_SIZE, seed=1))


class HeldModel:
    """Holds every batch until released: what the server holds meanwhile can be counted."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, queries: list[SessionQuery]) -> list[Recommendation]:
        self.entered.set()
        self.release.wait(HANG_S)
        return self.recommender.recommend_batch(queries)


@asynccontextmanager
async def serving(
    recommender: Recommender, model: HeldModel, max_stream_in_flight: int = 0, **batching: object
) -> AsyncIterator[tuple[recommender_pb2_grpc.RecommenderServiceStub, DynamicBatcher]]:
    batcher = DynamicBatcher(model, max_batch_delay_ms=0, **batching)  # type: ignore[arg-type]
    servicer = RecommenderServicer(recommender, batcher, max_stream_in_flight=max_stream_in_flight)
    host = ServiceHost(
        [SERVICE],
        lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server),
    )
    await batcher.start()
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield recommender_pb2_grpc.RecommenderServiceStub(channel), batcher
    finally:
        model.release.set()
        await host.stop(0)
        await batcher.stop(drain=False)


def _request(request_id: int, session_id: str = "s") -> recommender_pb2.RecommendRequest:
    return recommender_pb2.RecommendRequest(
        session_id=session_id, item_ids=[1 + request_id % CATALOG_SIZE], k=3, request_id=request_id
    )


async def _until(condition: object, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_stream_is_not_read_past_its_unanswered_requests_bound(recommender: Recommender) -> None:
    model = HeldModel(recommender)
    sent = 0

    async def send(count: int, first_id: int = 0) -> AsyncIterator[recommender_pb2.RecommendRequest]:
        nonlocal sent
        for request_id in range(first_id, first_id + count):
            sent += 1
            yield _request(request_id)

    async with serving(recommender, model, max_stream_in_flight=5, max_batch_size=1, max_queue_size=100) as (
        stub,
        batcher,
    ):
        stream = stub.RecommendStream(send(30))
        await asyncio.to_thread(model.entered.wait, HANG_S)
        await asyncio.sleep(0.5)  # time enough to read far more, were reading not bounded
        # One request in the model and four queued: the fifth slot's holder, and no more.
        assert batcher.queue_size == 4
        # The bound is per stream: another one is still read.
        other = stub.RecommendStream(send(1, first_id=1000))
        await _until(lambda: batcher.queue_size == 5)
        model.release.set()
        answers = [answer async for answer in stream]
        others = [answer async for answer in other]
    assert sorted(a.request_id for a in answers) == list(range(30))
    assert all(a.WhichOneof("result") == "response" for a in answers)
    assert [a.request_id for a in others] == [1000]


async def test_the_queue_refuses_a_request_that_would_pass_its_bytes_bound(recommender: Recommender) -> None:
    model = HeldModel(recommender)
    session_id = "x" * 200  # about 215 bytes a request
    size = _request(1, session_id).ByteSize()  # the same for request ids 1 to 127
    async with serving(recommender, model, max_batch_size=1, max_queue_bytes=4 * size) as (stub, batcher):
        first = asyncio.ensure_future(stub.Recommend(_request(10, session_id)))
        await asyncio.to_thread(model.entered.wait, HANG_S)
        queued = [asyncio.ensure_future(stub.Recommend(_request(i, session_id))) for i in range(1, 5)]
        await _until(lambda: batcher.queue_size == 4)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Recommend(_request(5, session_id))
        # A smaller request does not fit either: the bound is on bytes, not on a count.
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Recommend(_request(6, ""))
        model.release.set()
        answered = await asyncio.gather(first, *queued)
        # Answered requests gave their bytes back.
        after = await stub.Recommend(_request(7, session_id))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"max_queue_bytes = {4 * size:,}" in (refused.value.details() or "")
    assert [a.request_id for a in answered] == [10, 1, 2, 3, 4]
    assert after.request_id == 7


@pytest.mark.parametrize("flag,value", [("--max-queue-bytes", "0"), ("--max-stream-in-flight", "-1")])
def test_bounds_flags_refuse_what_cannot_bound_anything(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        etude_main(["serve", "inference", flag, value])
    assert refused.value.code == 2
    assert flag in capsys.readouterr().err
