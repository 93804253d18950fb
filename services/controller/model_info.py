"""What the controller asks a deployed inference service about itself: its GetModelInfo, for the
accuracy of a reduced precision and the service's own environment (what a trial records of the
served model), and once the load has run, the memory of each server (a router's shards too)."""

from __future__ import annotations

import grpc
import structlog

from etude.security import open_channel
from etude.v1 import experiment_pb2, recommender_pb2, recommender_pb2_grpc

_log = structlog.get_logger()

MODEL_INFO_TIMEOUT_S = 10.0


async def model_info(endpoint: str) -> recommender_pb2.ModelInfo | None:
    """The service's ModelInfo, or None when the controller cannot reach it (on Kubernetes from
    outside the cluster only the load generator reaches the inference Service)."""
    async with open_channel(endpoint) as channel:
        try:
            return await recommender_pb2_grpc.RecommenderServiceStub(channel).GetModelInfo(
                recommender_pb2.GetModelInfoRequest(), timeout=MODEL_INFO_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            _log.warning("model_info_unavailable", endpoint=endpoint, code=error.code().name)
            return None


def record_model_info(result: experiment_pb2.TrialResult, info: recommender_pb2.ModelInfo | None) -> None:
    """Copies into `result` the service's environment and its accuracy-mode recall (a reduced
    precision against fp32), when it answered."""
    if info is not None and info.HasField("environment"):
        result.inference_environment.CopyFrom(info.environment)
    if info is not None and info.HasField("accuracy"):
        result.recall_at_k = info.accuracy.recall_at_k
        result.recall_k = info.accuracy.k
        result.recall_sessions = info.accuracy.sessions


def record_server_memory(result: experiment_pb2.TrialResult, info: recommender_pb2.ModelInfo | None) -> None:
    """Replaces the trial's measured memory with what `info` reports: the service (or router)
    first, then a router's shards; nothing when the service did not answer."""
    if info is None or not info.HasField("memory"):
        return
    del result.server_memory[:]
    result.server_memory.append(info.memory)
    result.server_memory.extend(info.shard_memory)
