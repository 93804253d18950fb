"""WorkloadService through a real server on an ephemeral port: streams, totals, errors, health."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import numpy as np
import pytest
from etude.services.workload import server as workload_server
from etude.services.workload.generator import (
    DEFAULT_SESSIONS_PER_BATCH,
    SessionBatch,
    SessionGenerator,
    SyntheticWorkload,
)
from etude.services.workload.server import PopularityCache
from grpc_health.v1 import health_pb2, health_pb2_grpc

from etude.v1 import workload_pb2, workload_pb2_grpc


def _spec(**fields: object) -> workload_pb2.WorkloadSpec:
    base: dict[str, object] = {
        "catalog_size": 2_000,
        "exponents": workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.7),
        "seed": 31,
    }
    return workload_pb2.WorkloadSpec(**{**base, **fields})  # type: ignore[arg-type]


async def _collect(
    stub: workload_pb2_grpc.WorkloadServiceStub, spec: workload_pb2.WorkloadSpec
) -> list[SessionBatch]:
    return [SessionBatch.from_proto(message) async for message in stub.StreamSessions(spec)]


async def test_stream_is_the_in_process_generators_sessions(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
) -> None:
    batches = await _collect(workload_stub, _spec(sessions_per_batch=100, total_clicks=5_000))
    expected = list(SessionGenerator(SyntheticWorkload(2_000, 2.0, 1.7, seed=31)).batches(100, 5_000))
    assert len(batches) == len(expected)
    for received, generated in zip(batches, expected, strict=True):
        assert received.first_session_id == generated.first_session_id
        np.testing.assert_array_equal(received.lengths, generated.lengths)
        np.testing.assert_array_equal(received.item_ids, generated.item_ids)


async def test_total_clicks_are_streamed_exactly_with_consecutive_session_ids(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
) -> None:
    batches = await _collect(workload_stub, _spec(sessions_per_batch=37, total_clicks=1_234))
    assert sum(batch.num_clicks for batch in batches) == 1_234
    assert batches[0].first_session_id == 1
    for previous, batch in itertools.pairwise(batches):
        assert batch.first_session_id == previous.first_session_id + len(previous)
    assert all(len(batch) == 37 for batch in batches[:-1])


async def test_zero_defaults_mean_1024_sessions_of_at_most_50_clicks_until_cancelled(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
) -> None:
    spec = _spec(exponents=workload_pb2.PowerLawExponents(alpha_length=1.1, alpha_clicks=1.7))
    call = workload_stub.StreamSessions(spec)
    received = []
    async for message in call:
        received.append(SessionBatch.from_proto(message))
        if len(received) == 5:
            call.cancel()
            break
    assert all(len(batch) == DEFAULT_SESSIONS_PER_BATCH for batch in received)
    longest = max(int(batch.lengths.max()) for batch in received)
    assert longest == 50  # alpha 1.1 draws many longer sessions: all were cut to 50
    assert call.cancelled()
    assert await call.code() == grpc.StatusCode.CANCELLED


async def test_invalid_spec_is_invalid_argument_naming_the_field(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
    invalid_spec: workload_pb2.WorkloadSpec,
    invalid_field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _collect(workload_stub, invalid_spec)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith(f"{invalid_field} must be")


async def test_health_reports_serving(workload_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(workload_channel)
    for service in ("", "etude.v1.WorkloadService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_concurrent_streams_of_one_workload_build_its_popularity_once(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds: list[SyntheticWorkload] = []
    original = workload_server._build_popularity

    def counting_build(workload: SyntheticWorkload) -> workload_server.ItemPopularity:
        builds.append(workload)
        return original(workload)

    monkeypatch.setattr(workload_server, "_build_popularity", counting_build)
    spec = _spec(total_clicks=3_000)
    first, second = await asyncio.gather(_collect(workload_stub, spec), _collect(workload_stub, spec))
    np.testing.assert_array_equal(first[-1].item_ids, second[-1].item_ids)
    await _collect(workload_stub, _spec(total_clicks=10, sessions_per_batch=3))
    assert len(builds) == 1


async def test_a_build_out_of_memory_is_resource_exhausted_and_retried_next_time(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = workload_server._build_popularity
    failures = [MemoryError()]

    def failing_once(workload: SyntheticWorkload) -> workload_server.ItemPopularity:
        if failures:
            raise failures.pop()
        return original(workload)

    monkeypatch.setattr(workload_server, "_build_popularity", failing_once)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _collect(workload_stub, _spec(total_clicks=10))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "catalog_size 2,000" in (error.value.details() or "")
    batches = await _collect(workload_stub, _spec(total_clicks=10))
    assert sum(batch.num_clicks for batch in batches) == 10


async def test_popularity_cache_keeps_the_most_recent_workloads() -> None:
    cache = PopularityCache(max_entries=1)
    small = SyntheticWorkload(100, 2.0, 1.5, seed=1)
    first = await cache.get(small)
    # Session-only parameters do not change the table.
    assert await cache.get(SyntheticWorkload(100, 3.0, 1.5, seed=1, max_session_length=4)) is first
    other = await cache.get(SyntheticWorkload(100, 2.0, 1.5, seed=2))
    assert other is not first
    rebuilt = await cache.get(small)  # evicted by the other one
    assert rebuilt is not first
    np.testing.assert_array_equal(rebuilt.click_counts, first.click_counts)
    uncached = PopularityCache(max_entries=0)
    assert await uncached.get(small) is not await uncached.get(small)
    with pytest.raises(ValueError, match="max_entries"):
        PopularityCache(max_entries=-1)


async def test_a_catalog_beyond_the_limit_is_refused_naming_the_field_and_the_server_keeps_serving(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _collect(workload_stub, _spec(catalog_size=10**9, total_clicks=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details.startswith("catalog_size: ") and "100,000,000" in details
    batches = await _collect(workload_stub, _spec(total_clicks=10))
    assert sum(batch.num_clicks for batch in batches) == 10
