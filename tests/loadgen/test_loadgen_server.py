"""LoadGeneratorService through a real server on port 0, against fake recommender and workload
services on another port-0 server."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from etude.services.loadgen.generator import Session
from etude.services.loadgen.server import LoadGeneratorServicer
from etude.services.results.layout import RECORDS_FILE, SUMMARY_FILE
from loadgen_fakes import FakeRecommender, FakeWorkload

from etude.serving import ServiceHost, service_full_name
from etude.v1 import (
    loadgen_pb2,
    loadgen_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    workload_pb2,
    workload_pb2_grpc,
)


@dataclass
class Servers:
    loadgen: loadgen_pb2_grpc.LoadGeneratorServiceStub
    recommender: FakeRecommender
    workload: FakeWorkload
    backend_address: str
    in_process_specs: list[workload_pb2.WorkloadSpec]


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    recommender = FakeRecommender(delay_s=0.002)
    workload = FakeWorkload(session_length=3, sessions_per_batch=4)

    def register_backend(server: grpc.aio.Server) -> None:
        recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(recommender, server)
        workload_pb2_grpc.add_WorkloadServiceServicer_to_server(workload, server)

    backend = ServiceHost(
        service_names=[
            service_full_name(recommender_pb2, "RecommenderService"),
            service_full_name(workload_pb2, "WorkloadService"),
        ],
        register=register_backend,
    )
    in_process_specs: list[workload_pb2.WorkloadSpec] = []

    async def in_process_source(
        spec: workload_pb2.WorkloadSpec,
    ) -> AsyncGenerator[Session, None]:
        in_process_specs.append(spec)
        index = 0
        while True:
            yield Session(f"local-{index}", [7, 8])
            index += 1

    servicer = LoadGeneratorServicer(connect_timeout_s=1.0, in_process_source=in_process_source)
    loadgen = ServiceHost(
        service_names=[service_full_name(loadgen_pb2, "LoadGeneratorService")],
        register=lambda server: loadgen_pb2_grpc.add_LoadGeneratorServiceServicer_to_server(servicer, server),
    )
    backend_port = await backend.start()
    loadgen_port = await loadgen.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{loadgen_port}") as channel:
        yield Servers(
            loadgen_pb2_grpc.LoadGeneratorServiceStub(channel),
            recommender,
            workload,
            f"127.0.0.1:{backend_port}",
            in_process_specs,
        )
    await loadgen.stop(0)
    await backend.stop(0)


def load_spec(servers: Servers, **overrides: object) -> loadgen_pb2.LoadSpec:
    spec = loadgen_pb2.LoadSpec(
        target=servers.backend_address,
        profile=loadgen_pb2.LoadProfile(target_rate_per_s=10.0, ramp_duration_s=1, hold_duration_s=1, k=5),
        workload=workload_pb2.WorkloadSpec(
            catalog_size=50,
            exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.5),
        ),
        workload_endpoint=servers.backend_address,
        run_id="trial-1",
    )
    for path, value in overrides.items():
        message = spec
        *parents, field = path.split("__")
        for parent in parents:
            message = getattr(message, parent)
        setattr(message, field, value)
    return spec


async def test_run_streams_one_progress_per_tick_then_one_summary(servers: Servers, tmp_path: Path) -> None:
    spec = load_spec(servers, records_dir=str(tmp_path / "trial-1"))
    updates = [update async for update in servers.loadgen.Run(spec)]
    kinds = [update.WhichOneof("update") for update in updates]
    assert kinds == ["progress", "progress", "summary"]
    assert [update.progress.tick for update in updates[:2]] == [0, 1]
    assert all(update.progress.run_id == "trial-1" for update in updates[:2])
    summary = updates[-1].summary
    assert summary.run_id == "trial-1"
    assert summary.requests_sent == 20
    assert summary.requests_ok == 20
    assert summary.ticks == 2
    assert summary.server_queue.p50_ms == pytest.approx(0.05, rel=1e-3)
    assert summary.records_dir == str(tmp_path / "trial-1")
    with (tmp_path / "trial-1" / RECORDS_FILE).open() as handle:
        assert len(list(csv.DictReader(handle))) == 20
    # Sessions came from the workload endpoint and were replayed as growing prefixes.
    assert servers.workload.specs[0].catalog_size == 50
    lengths_by_session: dict[str, list[int]] = {}
    for request in servers.recommender.requests:
        lengths_by_session.setdefault(request.session_id, []).append(len(request.item_ids))
        assert request.k == 5
    assert all(lengths == list(range(1, len(lengths) + 1)) for lengths in lengths_by_session.values())


async def test_without_workload_endpoint_sessions_are_generated_in_process(
    servers: Servers,
) -> None:
    spec = load_spec(servers, workload_endpoint="", profile__ramp_duration_s=0)
    updates = [update async for update in servers.loadgen.Run(spec)]
    assert updates[-1].summary.requests_ok == 10
    assert servers.in_process_specs[0].catalog_size == 50
    assert {request.session_id[:6] for request in servers.recommender.requests} == {"local-"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"target": ""}, "target"),
        ({"profile__target_rate_per_s": 0.0}, "profile.target_rate_per_s"),
        ({"profile__target_rate_per_s": -5.0}, "profile.target_rate_per_s"),
        ({"profile__ramp_duration_s": -1}, "profile.ramp_duration_s"),
        ({"profile__hold_duration_s": -1}, "profile.hold_duration_s"),
        ({"profile__ramp_duration_s": 0, "profile__hold_duration_s": 0}, "profile.hold_duration_s"),
        ({"profile__request_timeout_ms": -1}, "profile.request_timeout_ms"),
        ({"profile__k": -1}, "profile.k"),
        ({"workload_endpoint": "", "workload__catalog_size": 0}, "workload.catalog_size"),
        (
            {"workload_endpoint": "", "workload__exponents__alpha_length": 1.0},
            "workload.exponents.alpha_length",
        ),
        (
            {"workload_endpoint": "", "workload__exponents__alpha_clicks": 0.5},
            "workload.exponents.alpha_clicks",
        ),
        ({"workload_endpoint": "", "workload__total_clicks": -1}, "workload.total_clicks"),
        (
            {"workload_endpoint": "", "workload__max_session_length": -1},
            "workload.max_session_length",
        ),
        (
            {"workload_endpoint": "", "workload__sessions_per_batch": -1},
            "workload.sessions_per_batch",
        ),
        ({"workload__catalog_size": 0}, "workload: catalog_size"),
        # Upper bounds (etude/limits.py): a run of 2^31 s, a rate of a billion, a trillion items.
        ({"profile__hold_duration_s": 2**31 - 1}, "profile.hold_duration_s"),
        ({"profile__target_rate_per_s": 1e9}, "profile.target_rate_per_s"),
        ({"workload_endpoint": "", "workload__catalog_size": 10**9}, "workload.catalog_size"),
    ],
)
async def test_an_invalid_spec_is_refused_naming_the_field(
    servers: Servers, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in servers.loadgen.Run(load_spec(servers, **overrides)):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(field)
    assert servers.recommender.requests == []


async def test_a_spec_without_profile_is_refused(servers: Servers) -> None:
    spec = load_spec(servers)
    spec.ClearField("profile")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in servers.loadgen.Run(spec):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("profile")


async def test_an_unreachable_target_fails_the_run_as_unavailable(servers: Servers) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in servers.loadgen.Run(load_spec(servers, target="127.0.0.1:1")):
            pass
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "target" in (raised.value.details() or "")


async def test_cancelling_the_call_stops_the_load_and_writes_the_summary(
    servers: Servers, tmp_path: Path
) -> None:
    spec = load_spec(
        servers, records_dir=str(tmp_path), profile__ramp_duration_s=0, profile__hold_duration_s=30
    )
    call = servers.loadgen.Run(spec)
    first = await call.read()
    assert first.progress.tick == 0
    call.cancel()
    summary_file = tmp_path / SUMMARY_FILE
    for _ in range(100):
        if summary_file.exists():
            break
        await asyncio.sleep(0.05)
    assert summary_file.exists()
    sent_after_cancel = len(servers.recommender.requests)
    await asyncio.sleep(0.3)
    assert len(servers.recommender.requests) == sent_after_cancel
    assert sent_after_cancel < 30 * 10
