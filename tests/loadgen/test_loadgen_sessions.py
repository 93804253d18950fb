"""Session sources: columnar batches split into sessions, in-process and streamed from a server."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from etude.services.loadgen.generator import Session
from etude.services.loadgen.sessions import (
    WorkloadSourceError,
    in_process_sessions,
    open_workload_channel,
    remote_sessions,
    split_batch,
)
from etude.services.loadgen.spec import InvalidLoadSpec
from loadgen_fakes import FakeWorkload

from etude.serving import ServiceHost, service_full_name
from etude.v1 import workload_pb2, workload_pb2_grpc


def workload_spec(**fields: Any) -> workload_pb2.WorkloadSpec:
    spec = workload_pb2.WorkloadSpec(
        catalog_size=100,
        exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.5),
        seed=7,
    )
    for name, value in fields.items():
        setattr(spec, name, value)
    return spec


async def take(sessions: AsyncIterator[Session], count: int) -> list[Session]:
    taken = []
    async for session in sessions:
        taken.append(session)
        if len(taken) == count:
            break
    return taken


def test_a_batch_splits_into_consecutive_sessions_with_consecutive_ids() -> None:
    sessions = split_batch(40, [2, 1, 3], np.array([5, 6, 7, 8, 9, 10], dtype=np.int64))
    assert sessions == [Session("40", [5, 6]), Session("41", [7]), Session("42", [8, 9, 10])]
    assert all(type(item) is int for session in sessions for item in session.item_ids)


def test_a_batch_whose_lengths_do_not_match_its_items_is_refused() -> None:
    with pytest.raises(WorkloadSourceError, match="add up to 3 but it holds 2"):
        split_batch(0, [1, 2], [1, 2])


@dataclass
class _FakeBatch:
    first_session_id: int
    lengths: np.ndarray
    item_ids: np.ndarray


class _FakeSyntheticWorkload:
    def __init__(self, **fields: Any) -> None:
        if fields["catalog_size"] > 1_000_000:
            raise ValueError("catalog_size: too large for this fake")
        self.fields = fields

    @classmethod
    def from_proto(cls, spec: workload_pb2.WorkloadSpec) -> _FakeSyntheticWorkload:
        return cls(catalog_size=spec.catalog_size, seed=spec.seed)


class _FakeSessionGenerator:
    """The future etude.services.workload.generator API: next_batch(n) -> SessionBatch."""

    def __init__(self, workload: _FakeSyntheticWorkload) -> None:
        self.workload = workload
        self.next_id = 0

    def next_batch(self, n: int) -> _FakeBatch:
        lengths = np.full(n, 3, dtype=np.int32)
        items = np.arange(self.next_id * 3, (self.next_id + n) * 3, dtype=np.int64) + 1
        batch = _FakeBatch(self.next_id, lengths, items)
        self.next_id += n
        return batch


@pytest.fixture
def fake_workload_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("etude.services.workload.generator")
    module.SessionGenerator = _FakeSessionGenerator  # type: ignore[attr-defined]
    module.SyntheticWorkload = _FakeSyntheticWorkload  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "etude.services.workload.generator", module)


@pytest.mark.usefixtures("fake_workload_module")
async def test_in_process_sessions_stop_at_total_clicks_cutting_the_last_session() -> None:
    sessions = [s async for s in in_process_sessions(workload_spec(total_clicks=7, sessions_per_batch=2))]
    assert sessions == [
        Session("0", [1, 2, 3]),
        Session("1", [4, 5, 6]),
        Session("2", [7]),
    ]


@pytest.mark.usefixtures("fake_workload_module")
async def test_in_process_sessions_stream_forever_when_total_clicks_is_zero() -> None:
    sessions = await take(in_process_sessions(workload_spec(sessions_per_batch=4)), 10)
    assert [s.session_id for s in sessions] == [str(i) for i in range(10)]


@pytest.mark.usefixtures("fake_workload_module")
async def test_a_workload_the_generator_rejects_is_an_invalid_spec() -> None:
    with pytest.raises(InvalidLoadSpec, match="workload: catalog_size"):
        await take(in_process_sessions(workload_spec(catalog_size=10**9)), 1)


@pytest.fixture
def fake_workload() -> FakeWorkload:
    return FakeWorkload(session_length=2, sessions_per_batch=3)


@pytest.fixture
async def workload_channel(fake_workload: FakeWorkload) -> AsyncIterator[grpc.aio.Channel]:
    host = ServiceHost(
        service_names=[service_full_name(workload_pb2, "WorkloadService")],
        register=lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(
            fake_workload, server
        ),
    )
    port = await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await host.stop(0)


def test_a_batch_with_a_session_id_step_numbers_its_sessions_that_far_apart() -> None:
    sessions = split_batch(2, [1, 2], [5, 6, 7], session_id_step=3)
    assert sessions == [Session("2", [5]), Session("5", [6, 7])]


def test_a_batch_with_click_offsets_gives_each_session_its_clicks_times() -> None:
    sessions = split_batch(1, [2, 1], [5, 6, 7], click_offsets_s=[0.0, 1.5, 0.5])
    assert sessions == [Session("1", [5, 6], [0.0, 1.5]), Session("2", [7], [0.5])]
    with pytest.raises(WorkloadSourceError, match="2 click_offsets_s for 3 item_ids"):
        split_batch(1, [2, 1], [5, 6, 7], click_offsets_s=[0.0, 1.5])


async def test_remote_sessions_read_batches_ahead_of_the_sessions_taken(
    workload_channel: grpc.aio.Channel, fake_workload: FakeWorkload
) -> None:
    sessions = remote_sessions(workload_channel, workload_spec(), prefetch_batches=3)
    await take(sessions, 1)
    # The reader fills its buffer while the first batch's sessions are still being taken.
    async with asyncio.timeout(5):
        while fake_workload.batches_sent < 4:  # noqa: ASYNC110 (a counter in a servicer, polled)
            await asyncio.sleep(0.01)
    taken = await take(sessions, 11)
    await sessions.aclose()
    assert [s.session_id for s in taken] == [str(i) for i in range(1, 12)]


async def test_remote_sessions_of_a_replay_part_keep_the_log_positions_as_ids(tmp_path: Path) -> None:
    from etude.services.workload.server import WorkloadServicer

    log = tmp_path / "clicks.csv"
    log.write_text(
        "session,item,time\n" + "".join(f"s{s},i{s % 3},{100 + s}\n" for s in range(6) for _ in range(2))
    )
    host = ServiceHost(
        service_names=[service_full_name(workload_pb2, "WorkloadService")],
        register=lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(
            WorkloadServicer(), server
        ),
    )
    port = await host.start()
    try:
        spec = workload_pb2.WorkloadSpec(
            catalog_size=3,
            replay=workload_pb2.ReplaySource(path=str(log), timestamp_column="time"),
            session_partition=1,
            session_partition_count=2,
            sessions_per_batch=2,
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            sessions = [s async for s in remote_sessions(channel, spec)]
    finally:
        await host.stop(0)
    # Sessions 2, 4 and 6 of the log (1-based), each whole, items by first appearance, each
    # click's time from the log's first.
    assert sessions == [
        Session("2", [2, 2], [1.0, 1.0]),
        Session("4", [1, 1], [3.0, 3.0]),
        Session("6", [3, 3], [5.0, 5.0]),
    ]


async def test_remote_sessions_turn_streamed_batches_into_sessions(
    workload_channel: grpc.aio.Channel,
) -> None:
    sessions = remote_sessions(workload_channel, workload_spec())
    taken = await take(sessions, 5)
    await sessions.aclose()
    assert [s.session_id for s in taken] == ["0", "1", "2", "3", "4"]
    assert [list(s.item_ids) for s in taken[:2]] == [[1, 2], [3, 4]]


async def test_a_workload_the_service_rejects_is_an_invalid_spec(
    workload_channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(InvalidLoadSpec, match="workload: catalog_size"):
        await take(remote_sessions(workload_channel, workload_spec(catalog_size=0)), 1)


async def test_an_unreachable_workload_service_is_a_source_error() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(WorkloadSourceError) as raised:
            await take(remote_sessions(channel, workload_spec()), 1)
    assert raised.value.status == "UNAVAILABLE"


async def test_the_real_in_process_generator_yields_sessions_within_the_catalog() -> None:
    pytest.importorskip("etude.services.workload.generator")
    spec = workload_spec(catalog_size=1_000, max_session_length=7, total_clicks=500)
    sessions = [s async for s in in_process_sessions(spec)]
    assert sum(len(s.item_ids) for s in sessions) == 500
    assert all(1 <= len(s.item_ids) <= 7 for s in sessions)
    assert all(1 <= item <= 1_000 for s in sessions for item in s.item_ids)
    assert len({s.session_id for s in sessions}) == len(sessions)


async def test_a_workload_the_real_generator_rejects_is_an_invalid_spec() -> None:
    pytest.importorskip("etude.services.workload.generator")
    with pytest.raises(InvalidLoadSpec, match="sessions_per_batch") as raised:
        await take(in_process_sessions(workload_spec(sessions_per_batch=10**9)), 1)
    assert raised.value.field.startswith("workload")


async def test_flow_control_keeps_the_workload_service_a_few_batches_ahead() -> None:
    fake = FakeWorkload(session_length=10, sessions_per_batch=2_000)
    host = ServiceHost(
        service_names=[service_full_name(workload_pb2, "WorkloadService")],
        register=lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(fake, server),
    )
    port = await host.start()
    try:
        async with open_workload_channel(f"127.0.0.1:{port}") as channel:
            # Batches of about 60 KB (20,000 ids of 3 bytes), one session taken.
            sessions = remote_sessions(channel, workload_spec(catalog_size=10**6), prefetch_batches=2)
            await take(sessions, 1)
            await asyncio.sleep(1.0)
            # The buffer (2), the batch being taken, and what the 64 KiB window holds: no more.
            assert fake.batches_sent <= 8
            await sessions.aclose()
    finally:
        await host.stop(0)
