"""Fixtures of the workload tests: a real WorkloadService on an ephemeral loopback port, and the
malformed specs that both the core and the servicer must refuse (`invalid_spec`, `invalid_field`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest
from etude.services.workload.generator import MAX_CATALOG_SIZE, MAX_CLICKS_PER_BATCH
from etude.services.workload.server import PopularityCache, WorkloadServicer

from etude.serving import MAX_MESSAGE_BYTES, ServiceHost, service_full_name
from etude.v1 import workload_pb2, workload_pb2_grpc


def _spec(alpha_length: float = 2.0, alpha_clicks: float = 1.5, **fields: int) -> object:
    return workload_pb2.WorkloadSpec(
        catalog_size=fields.pop("catalog_size", 1_000),
        exponents=workload_pb2.PowerLawExponents(alpha_length=alpha_length, alpha_clicks=alpha_clicks),
        **fields,
    )


# (spec, the field its error must name); each breaks exactly one rule.
INVALID_SPECS = [
    (_spec(catalog_size=0), "catalog_size"),
    (_spec(catalog_size=-5), "catalog_size"),
    (_spec(catalog_size=MAX_CATALOG_SIZE + 1), "catalog_size"),
    (_spec(alpha_length=1.0), "exponents.alpha_length"),
    (_spec(alpha_length=0.5), "exponents.alpha_length"),
    (_spec(alpha_length=math.nan), "exponents.alpha_length"),
    (_spec(alpha_length=math.inf), "exponents.alpha_length"),
    (_spec(alpha_clicks=1.0), "exponents.alpha_clicks"),
    (_spec(alpha_clicks=-2.0), "exponents.alpha_clicks"),
    (workload_pb2.WorkloadSpec(catalog_size=10), "exponents.alpha_length"),
    (_spec(max_session_length=-1), "max_session_length"),
    (_spec(max_session_length=MAX_CLICKS_PER_BATCH + 1), "max_session_length"),
    (_spec(sessions_per_batch=-1), "sessions_per_batch"),
    (_spec(max_session_length=1_000, sessions_per_batch=5_000), "sessions_per_batch"),
    (_spec(total_clicks=-1), "total_clicks"),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "invalid_spec" in metafunc.fixturenames:
        metafunc.parametrize(
            ("invalid_spec", "invalid_field"),
            INVALID_SPECS,
            ids=[f"{field}-{index}" for index, (_, field) in enumerate(INVALID_SPECS)],
        )


@pytest.fixture
def popularity_cache() -> PopularityCache:
    return PopularityCache(max_entries=2)


@pytest.fixture
async def workload_channel(popularity_cache: PopularityCache) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a WorkloadService served on port 0, stopped after the test."""
    servicer = WorkloadServicer(popularity_cache)
    host = ServiceHost(
        [service_full_name(workload_pb2, "WorkloadService")],
        lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(servicer, server),
        port=0,
    )
    port = await host.start()
    try:
        # The server's message size limit: big batches exceed gRPC's 4 MiB default.
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            yield channel
    finally:
        await host.stop(grace_s=0)


@pytest.fixture
def workload_stub(workload_channel: grpc.aio.Channel) -> workload_pb2_grpc.WorkloadServiceStub:
    return workload_pb2_grpc.WorkloadServiceStub(workload_channel)
