"""WorkloadService replaying a click log through a real server on an ephemeral port: every
session once and in log order, parts, offsets, one index per log, and each refusal by name."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from click_logs import expected_sessions, random_clicks, sessions_of, write_log
from etude.services.workload import server as workload_server
from etude.services.workload.generator import SessionBatch
from etude.services.workload.server import WorkloadServicer

from etude.serving import ServiceHost, service_full_name
from etude.v1 import workload_pb2, workload_pb2_grpc


def _replay(path: Path | str, catalog_size: int = 10_000, **fields: object) -> workload_pb2.WorkloadSpec:
    source = {
        name: fields.pop(name)
        for name in ("session_column", "item_column", "timestamp_column", "no_header")
        if name in fields
    }
    return workload_pb2.WorkloadSpec(
        catalog_size=catalog_size,
        replay=workload_pb2.ReplaySource(path=str(path), **source),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


async def _collect(
    stub: workload_pb2_grpc.WorkloadServiceStub, spec: workload_pb2.WorkloadSpec
) -> list[SessionBatch]:
    return [SessionBatch.from_proto(message) async for message in stub.StreamSessions(spec)]


async def _refusal(stub: workload_pb2_grpc.WorkloadServiceStub, spec: workload_pb2.WorkloadSpec) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _collect(stub, spec)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value.details() or ""


async def test_every_session_of_the_log_arrives_once_in_order_with_item_ids_in_1_to_n(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub, tmp_path: Path
) -> None:
    clicks = random_clicks(10_000, seed=1)
    expected = expected_sessions(clicks)
    num_items = len({item for _, item, _ in clicks})
    path = write_log(tmp_path / "clicks.csv", clicks)
    batches = await _collect(workload_stub, _replay(path, catalog_size=num_items, sessions_per_batch=100))
    assert sessions_of(batches) == expected
    ids = [session_id for batch in batches for session_id in batch.session_ids.tolist()]
    assert ids == list(range(1, len(expected) + 1))
    assert min(int(batch.item_ids.min()) for batch in batches) == 1
    assert max(int(batch.item_ids.max()) for batch in batches) == num_items
    assert all(batch.click_offsets_s is None for batch in batches)


async def test_parts_streamed_by_several_callers_split_the_log_between_them(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub, tmp_path: Path
) -> None:
    clicks = random_clicks(4_000, seed=2)
    expected = expected_sessions(clicks)
    path = write_log(tmp_path / "clicks.csv", clicks)
    parts = await asyncio.gather(
        *(
            _collect(workload_stub, _replay(path, session_partition=i, session_partition_count=3))
            for i in range(3)
        )
    )
    by_id: dict[int, list[int]] = {}
    for part, batches in enumerate(parts):
        assert sessions_of(batches) == expected[part::3]
        for batch in batches:
            for position, session_id in enumerate(batch.session_ids.tolist()):
                by_id[session_id] = batch.session(position).tolist()
    assert [by_id[session_id] for session_id in sorted(by_id)] == expected


async def test_a_timed_tab_separated_log_streams_its_click_offsets(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub, tmp_path: Path
) -> None:
    path = tmp_path / "clicks.tsv"
    path.write_text("7\t100\tx\n8\t103.5\ty\n7\t101\tz\n")
    spec = _replay(path, session_column="0", item_column="2", timestamp_column="1", no_header=True)
    (batch,) = await _collect(workload_stub, spec)
    assert sessions_of([batch]) == [[1, 3], [2]]
    assert batch.click_offsets_s is not None and batch.click_offsets_s.tolist() == [0.0, 1.0, 3.5]


async def test_total_clicks_cuts_the_replay(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub, tmp_path: Path
) -> None:
    path = write_log(tmp_path / "clicks.csv", random_clicks(1_000, seed=4))
    batches = await _collect(workload_stub, _replay(path, total_clicks=250, sessions_per_batch=16))
    assert sum(batch.num_clicks for batch in batches) == 250


async def test_a_catalog_below_the_logs_items_is_refused_naming_n(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub, tmp_path: Path
) -> None:
    clicks = random_clicks(2_000, seed=6)
    num_items = len({item for _, item, _ in clicks})
    path = write_log(tmp_path / "clicks.csv", clicks)
    details = await _refusal(workload_stub, _replay(path, catalog_size=num_items - 1))
    assert details.startswith(f"catalog_size {num_items - 1:,} is below the {num_items:,} distinct items")
    assert f"catalog_size >= {num_items:,}" in details
    # A larger catalog is fine: its extra items are never clicked.
    batches = await _collect(workload_stub, _replay(path, catalog_size=num_items + 1_000))
    assert sum(batch.num_clicks for batch in batches) == 2_000


@pytest.mark.parametrize(
    ("content", "fields", "reason"),
    [
        (None, {}, "replay.path: cannot read"),
        (b"", {}, "replay.path: "),
        (b"\xff\xfe\x00\x81,\x90\n", {"no_header": True}, "replay.path: "),
        (b"session,item\n", {}, "replay.path: "),
        (b"session,item\na,x\n", {"session_column": "visit"}, "replay.session_column: "),
        (b"session,item\na,x\n", {"item_column": "7"}, "replay.item_column: "),
        (b"session,item\na,x\n", {"timestamp_column": "item"}, "replay.timestamp_column: "),
    ],
    ids=["missing", "empty", "not-text", "no-clicks", "no-such-column", "short-rows", "bad-timestamp"],
)
async def test_a_bad_log_is_invalid_argument_naming_the_field(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
    tmp_path: Path,
    content: bytes | None,
    fields: dict[str, object],
    reason: str,
) -> None:
    path = tmp_path / "clicks.csv"
    if content is not None:
        path.write_bytes(content)
    assert (await _refusal(workload_stub, _replay(path, **fields))).startswith(reason)


async def test_bad_parts_and_remote_paths_are_refused_by_name(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub, tmp_path: Path
) -> None:
    path = write_log(tmp_path / "clicks.csv", random_clicks(100))
    spec = _replay(path, session_partition=3, session_partition_count=3)
    assert (await _refusal(workload_stub, spec)).startswith("session_partition must be an integer in 0..2")
    spec = _replay(path, session_partition_count=2_000_000)
    assert (await _refusal(workload_stub, spec)).startswith("session_partition_count: ")
    details = await _refusal(workload_stub, _replay("s3://bucket/clicks.csv"))
    assert details.startswith("replay.path: s3://bucket/clicks.csv: only local paths are indexed")


async def test_concurrent_parts_of_one_log_index_it_once_and_a_rewritten_log_anew(
    workload_stub: workload_pb2_grpc.WorkloadServiceStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    original = workload_server._build_replay_index

    def counting_build(source: workload_server.ReplaySource) -> workload_server.ReplayIndex:
        built.append(source.path)
        return original(source)

    monkeypatch.setattr(workload_server, "_build_replay_index", counting_build)
    path = write_log(tmp_path / "clicks.csv", random_clicks(2_000, seed=8))
    specs = [_replay(path, session_partition=i, session_partition_count=4) for i in range(4)]
    await asyncio.gather(*(_collect(workload_stub, spec) for spec in specs))
    assert len(built) == 1
    clicks = random_clicks(500, seed=9)
    write_log(path, clicks)
    os.utime(path, ns=(1, 1))  # a new modification time even on a coarse clock
    assert sessions_of(await _collect(workload_stub, _replay(path))) == expected_sessions(clicks)
    assert len(built) == 2


@pytest.fixture
async def rooted_stub(tmp_path: Path) -> AsyncIterator[workload_pb2_grpc.WorkloadServiceStub]:
    """A WorkloadService that replays only logs under tmp_path / "logs" (its --replay-root)."""
    (tmp_path / "logs").mkdir()
    servicer = WorkloadServicer(replay_root=tmp_path / "logs")
    host = ServiceHost(
        [service_full_name(workload_pb2, "WorkloadService")],
        lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(servicer, server),
        port=0,
    )
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield workload_pb2_grpc.WorkloadServiceStub(channel)
    finally:
        await host.stop(grace_s=0)


async def test_a_replay_root_admits_logs_inside_it_and_refuses_others_by_name(
    rooted_stub: workload_pb2_grpc.WorkloadServiceStub, tmp_path: Path
) -> None:
    clicks = random_clicks(300, seed=12)
    write_log(tmp_path / "logs" / "clicks.csv", clicks)
    write_log(tmp_path / "secret.csv", clicks)
    (tmp_path / "logs" / "link.csv").symlink_to(tmp_path / "secret.csv")
    assert sessions_of(await _collect(rooted_stub, _replay("clicks.csv"))) == expected_sessions(clicks)
    assert sessions_of(await _collect(rooted_stub, _replay(tmp_path / "logs" / "clicks.csv"))) == (
        expected_sessions(clicks)
    )
    for outside in (tmp_path / "secret.csv", "../secret.csv", "link.csv"):
        details = await _refusal(rooted_stub, _replay(outside))
        assert details.startswith("replay.path: ") and "outside the folder" in details
