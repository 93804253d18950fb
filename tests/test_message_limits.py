"""Every server accepts requests no larger than its largest valid request (with headroom): a huge
message is refused by gRPC before it takes memory, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from etude.limits import DEFAULT_MAX_REQUEST_BYTES, MAX_REQUEST_BYTES
from etude.serving import server_options
from etude.v1 import recommender_pb2, recommender_pb2_grpc


def test_a_server_accepts_what_its_largest_service_needs() -> None:
    options = dict(server_options(["etude.v1.RecommenderService", "etude.v1.WorkloadService"]))
    assert options["grpc.max_receive_message_length"] == MAX_REQUEST_BYTES["etude.v1.RecommenderService"]
    assert (
        dict(server_options(["unknown.Service"]))["grpc.max_receive_message_length"]
        == DEFAULT_MAX_REQUEST_BYTES
    )


async def test_a_40_mib_session_id_is_refused_and_the_inference_service_keeps_answering(
    child_service,
) -> None:
    async with child_service("inference", ["--model", "noop", "--catalog-size", "100"]) as endpoint:
        options = [("grpc.max_send_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(endpoint, options=options) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            huge = recommender_pb2.RecommendRequest(session_id="x" * (40 << 20), item_ids=[1], k=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Recommend(huge, timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            answer = await stub.Recommend(recommender_pb2.RecommendRequest(item_ids=[1, 2], k=5), timeout=30)
            assert len(answer.item_ids) == 5
