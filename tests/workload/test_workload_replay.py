"""Replay of a click log (the core, no gRPC): log order, the item id rule, parts, whole sessions,
timestamp offsets, the log formats `etude workload fit` reads, and each bad log refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click_logs import expected_sessions, random_clicks, sessions_of, write_log
from etude.services.workload import replay
from etude.services.workload.fit import (
    ClickLogColumns,
    ClickLogError,
    fit_click_log,
    fit_counts,
    iter_click_chunks,
    read_click_log,
)
from etude.services.workload.generator import InvalidWorkloadSpec, SessionBatch
from etude.services.workload.replay import (
    ReplayIndex,
    ReplayRequest,
    ReplaySource,
    index_click_log,
    require_catalog_covers,
)

from etude.v1 import workload_pb2

DEFAULT_COLUMNS = ClickLogColumns()


def index_of(
    path: Path | str, columns: ClickLogColumns = DEFAULT_COLUMNS, tmp: Path | None = None
) -> ReplayIndex:
    return index_click_log(ReplaySource(str(path), columns), tmp)


TIMED = ClickLogColumns("session_id", "item_id", "timestamp")


def test_sessions_come_in_order_of_first_click_each_with_its_clicks_in_log_order(tmp_path: Path) -> None:
    clicks = [("b", "x", 0), ("a", "y", 1), ("b", "z", 2), ("c", "x", 3), ("a", "x", 4), ("b", "y", 5)]
    index = index_of(write_log(tmp_path / "clicks.csv", clicks))
    batches = list(index.batches(2))
    # b first (x=1, z=3, y=2), then a (y=2, x=1), then c (x=1): ids by first appearance in the file.
    assert sessions_of(batches) == [[1, 3, 2], [2, 1], [1]]
    assert [batch.session_ids.tolist() for batch in batches] == [[1, 2], [3]]
    assert (index.num_clicks, index.num_sessions, index.num_items) == (6, 3, 3)


def test_a_large_interleaved_log_replays_exactly_as_the_rule_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks so indexing and reordering cross many chunk boundaries.
    monkeypatch.setattr(replay, "_CHUNK_CLICKS", 1_000)
    monkeypatch.setattr(replay, "_REORDER_CLICKS", 777)
    clicks = random_clicks(20_000, seed=3)
    index = index_of(write_log(tmp_path / "clicks.csv", clicks))
    assert sessions_of(list(index.batches(300))) == expected_sessions(clicks)


def test_item_ids_are_1_to_n_by_first_appearance_and_the_same_log_maps_the_same_way(tmp_path: Path) -> None:
    clicks = random_clicks(3_000, seed=5)
    path = write_log(tmp_path / "clicks.csv", clicks)
    first, second = index_of(path), index_of(path)
    assert np.array_equal(first.item_ids, second.item_ids)
    distinct = len({item for _, item, _ in clicks})
    assert first.num_items == distinct
    assert first.item_ids.min() == 1 and first.item_ids.max() == distinct
    assert first.session(0)[0] == 1  # the file's first click is the first session's first click


def test_parts_take_every_nth_session_and_together_are_the_log_once(tmp_path: Path) -> None:
    clicks = random_clicks(5_000, seed=7)
    expected = expected_sessions(clicks)
    index = index_of(write_log(tmp_path / "clicks.csv", clicks))
    parts = 3
    for part in range(parts):
        batches = list(index.batches(50, partition=part, partition_count=parts))
        assert sessions_of(batches) == expected[part::parts]
        ids = np.concatenate([batch.session_ids for batch in batches])
        assert ids.tolist() == list(range(part + 1, len(expected) + 1, parts))
        assert all(batch.session_id_step == parts for batch in batches)


def test_sessions_longer_than_50_are_sent_whole(tmp_path: Path) -> None:
    clicks = [("long", f"i{k % 70}", k) for k in range(120)] + [("short", "i1", 200)]
    index = index_of(write_log(tmp_path / "clicks.csv", clicks))
    (batch,) = index.batches(1_024)
    assert batch.lengths.tolist() == [120, 1]
    assert batch.session(0).tolist() == [k % 70 + 1 for k in range(120)]


def test_clicks_carry_their_seconds_from_the_logs_earliest_timestamp(tmp_path: Path) -> None:
    clicks = [("a", "x", 1_000.5), ("b", "y", 990.0), ("a", "y", 1_010.0)]
    index = index_of(write_log(tmp_path / "clicks.csv", clicks), TIMED)
    (batch,) = index.batches(10)
    assert batch.click_offsets_s is not None
    assert batch.click_offsets_s.tolist() == [10.5, 20.0, 0.0]  # session a, then b
    proto = SessionBatch.from_proto(batch.to_proto())
    assert proto.click_offsets_s is not None and proto.click_offsets_s.tolist() == [10.5, 20.0, 0.0]


def test_iso_8601_timestamps_are_read_as_utc_seconds(tmp_path: Path) -> None:
    path = tmp_path / "clicks.tsv"
    path.write_text(
        "1\t2014-04-07T10:51:09.277Z\t7\n1\t2014-04-07T10:51:10.277Z\t8\n2\t2014-04-07T10:50:09\t7\n"
    )
    index = index_of(path, ClickLogColumns("0", "2", "1", header=False))
    (batch,) = index.batches(10)
    assert batch.click_offsets_s is not None
    np.testing.assert_allclose(batch.click_offsets_s, [60.277, 61.277, 0.0])


def test_without_a_timestamp_column_batches_carry_no_offsets(tmp_path: Path) -> None:
    index = index_of(write_log(tmp_path / "clicks.csv", random_clicks(100)))
    assert not index.has_timestamps
    assert all(batch.click_offsets_s is None for batch in index.batches(10))
    assert all(len(batch.to_proto().click_offsets_s) == 0 for batch in index.batches(10))


@pytest.mark.parametrize(
    ("delimiter", "header", "columns"),
    [
        ("\t", True, ClickLogColumns("session_id", "item_id")),
        ("\t", False, ClickLogColumns("0", "1", "2", header=False)),
        (";", True, ClickLogColumns("0", "item_id", "2")),
        (",", False, ClickLogColumns("0", "1", header=False)),
    ],
)
def test_csv_and_tsv_with_columns_by_name_or_index(
    tmp_path: Path, delimiter: str, header: bool, columns: ClickLogColumns
) -> None:
    clicks = random_clicks(500, seed=11)
    path = write_log(tmp_path / "clicks.txt", clicks, delimiter=delimiter, header=header)
    index = index_of(path, columns)
    assert sessions_of(list(index.batches(64))) == expected_sessions(clicks)
    assert index.has_timestamps == (columns.timestamp is not None)


def test_columns_in_another_order_are_found_by_name(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("time,item,visit,referrer\n5,a,x,r\n6,b,y,r\n7,a,x,r\n")
    index = index_of(path, ClickLogColumns("visit", "item", "time"))
    assert sessions_of(list(index.batches(10))) == [[1, 1], [2]]
    (batch,) = index.batches(10)
    assert batch.click_offsets_s is not None and batch.click_offsets_s.tolist() == [0.0, 2.0, 1.0]


def test_batches_stop_at_total_clicks_and_never_go_past_the_log(tmp_path: Path) -> None:
    clicks = random_clicks(1_000, seed=2)
    index = index_of(write_log(tmp_path / "clicks.csv", clicks), TIMED)
    cut = list(index.batches(7, total_clicks=123))
    assert sum(batch.num_clicks for batch in cut) == 123
    assert all(
        batch.click_offsets_s is not None and batch.click_offsets_s.size == batch.num_clicks for batch in cut
    )
    whole = list(index.batches(7, total_clicks=10**9))
    assert sum(batch.num_clicks for batch in whole) == 1_000
    assert all(len(batch) == 7 for batch in whole[:-1])


def test_a_batch_ends_before_it_would_pass_the_click_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "MAX_CLICKS_PER_REPLAY_BATCH", 10)
    clicks = [(f"s{k // 4}", f"i{k}", k) for k in range(40)]  # ten sessions of four clicks
    index = index_of(write_log(tmp_path / "clicks.csv", clicks))
    batches = list(index.batches(100))
    assert [len(batch) for batch in batches] == [2, 2, 2, 2, 2]
    assert sessions_of(batches) == expected_sessions(clicks)
    monkeypatch.setattr(replay, "MAX_CLICKS_PER_REPLAY_BATCH", 3)
    with pytest.raises(ClickLogError, match="4 clicks; a replayed session may have at most 3") as refused:
        index_of(tmp_path / "clicks.csv")
    assert refused.value.field == "path"


def test_a_catalog_below_the_logs_items_is_refused_naming_n(tmp_path: Path) -> None:
    clicks = [("a", "x", 0), ("a", "y", 1), ("b", "z", 2)]
    index = index_of(write_log(tmp_path / "clicks.csv", clicks))
    with pytest.raises(InvalidWorkloadSpec, match="catalog_size 2 is below the 3 distinct items") as refused:
        require_catalog_covers(index, 2, str(tmp_path / "clicks.csv"))
    assert refused.value.field == "catalog_size"
    require_catalog_covers(index, 3, str(tmp_path / "clicks.csv"))
    require_catalog_covers(index, 1_000, str(tmp_path / "clicks.csv"))  # the extra items are never clicked


def _bad_logs(tmp_path: Path) -> dict[str, tuple[Path | str, ClickLogColumns, str, str]]:
    def text(name: str, content: str) -> Path:
        (tmp_path / name).write_text(content)
        return tmp_path / name

    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"session,item\n\xff\xfe\x00\x81,\x90\n")
    (tmp_path / "folder.csv").mkdir()
    good = text("good.csv", "session,item,time\na,x,1\n")
    return {
        "empty path": ("", ClickLogColumns(), "path", "path is empty"),
        "missing": (tmp_path / "absent.csv", ClickLogColumns(), "path", "cannot read"),
        "name too long": ("x" * 5000, ClickLogColumns(), "path", "File name too long"),
        "folder": (tmp_path / "folder.csv", ClickLogColumns(), "path", "not a regular file"),
        "not text": (binary, ClickLogColumns(), "path", "not UTF-8"),
        "empty": (text("empty.csv", ""), ClickLogColumns(), "path", "is empty"),
        "header only": (text("header.csv", "session,item\n"), ClickLogColumns(), "path", "holds no clicks"),
        "gs": ("gs://bucket/clicks.csv", ClickLogColumns(), "path", "only local paths are indexed"),
        "unknown column": (good, ClickLogColumns("visit"), "session_column", "no column 'visit'"),
        "name without header": (good, ClickLogColumns("0", "item", header=False), "item_column", "no header"),
        "short row": (text("short.csv", "s,i\na,x\nb\n"), ClickLogColumns(), "item_column", ":3: expected"),
        "index past the row": (good, ClickLogColumns("0", "1", "5"), "timestamp_column", ":2: expected"),
        "bad timestamp": (good, ClickLogColumns("0", "1", "item"), "timestamp_column", "neither a number"),
        "mixed timestamps": (
            text("mixed.csv", "s,i,t\na,x,1\na,y,yesterday\n"),
            ClickLogColumns("0", "1", "2"),
            "timestamp_column",
            "click 2 has the timestamp 'yesterday', unlike the first",
        ),
        "NaN timestamp": (
            text("nan.csv", "s,i,t\na,x,1\na,y,2\nb,y,nan\n"),
            ClickLogColumns("0", "1", "2"),
            "timestamp_column",
            "not a finite number",
        ),
        "infinite timestamp": (
            text("inf.csv", "s,i,t\na,x,1\na,y,inf\n"),
            ClickLogColumns("0", "1", "2"),
            "timestamp_column",
            "not a finite number",
        ),
    }


BAD_LOGS = [
    "empty path",
    "missing",
    "name too long",
    "folder",
    "not text",
    "empty",
    "header only",
    "gs",
    "unknown column",
    "name without header",
    "short row",
    "index past the row",
    "bad timestamp",
    "mixed timestamps",
    "infinite timestamp",
    "NaN timestamp",
]


@pytest.mark.parametrize("case", BAD_LOGS)
def test_a_bad_log_is_refused_naming_the_setting_and_leaves_no_files(tmp_path: Path, case: str) -> None:
    path, columns, field, words = _bad_logs(tmp_path)[case]
    index_folder = tmp_path / "index"
    index_folder.mkdir()
    with pytest.raises(ClickLogError) as refused:
        index_of(path, columns, index_folder)
    assert refused.value.field == field
    assert words in str(refused.value)
    assert list(index_folder.iterdir()) == []


def test_closing_an_index_deletes_its_files(tmp_path: Path) -> None:
    index = index_of(write_log(tmp_path / "clicks.csv", random_clicks(100)), TIMED, tmp_path)
    folder = index.folder
    assert folder.parent == tmp_path and sorted(os.listdir(folder)) == ["items.ordered", "times.ordered"]
    batches = list(index.batches(10))
    index.close()
    assert not folder.exists()
    assert sum(batch.num_clicks for batch in batches) == 100  # batches are copies


def test_a_replay_request_reads_the_proto_with_its_defaults_and_bounds() -> None:
    spec = workload_pb2.WorkloadSpec(
        catalog_size=10, replay=workload_pb2.ReplaySource(path="clicks.tsv", timestamp_column="ts")
    )
    request = ReplayRequest.from_proto(spec)
    assert request.source == ReplaySource("clicks.tsv", ClickLogColumns("0", "1", "ts", header=True))
    assert (request.sessions_per_batch, request.partition, request.partition_count) == (1_024, 0, 1)
    assert request.total_clicks is None
    for change, field in [
        ({"session_partition": 2, "session_partition_count": 2}, "session_partition"),
        ({"session_partition": 1}, "session_partition"),
        ({"catalog_size": 0}, "catalog_size"),
        ({"sessions_per_batch": -1}, "sessions_per_batch"),
        ({"total_clicks": -1}, "total_clicks"),
    ]:
        bad = workload_pb2.WorkloadSpec()
        bad.CopyFrom(spec)
        for name, value in change.items():
            setattr(bad, name, value)
        with pytest.raises(InvalidWorkloadSpec) as refused:
            ReplayRequest.from_proto(bad)
        assert refused.value.field == field
    with pytest.raises(InvalidWorkloadSpec, match=r"replay\.path must name"):
        ReplayRequest.from_proto(
            workload_pb2.WorkloadSpec(catalog_size=1, replay=workload_pb2.ReplaySource())
        )


def test_the_shared_reader_names_the_line_of_a_short_row_past_the_first_chunk(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("session,item\n" + "a,x\n" * 8 + "\n" + "b,y\n" + "c\n")
    chunks = iter_click_chunks(path, clicks_per_chunk=3)
    with pytest.raises(ClickLogError, match=r":12: expected columns \[0, 1\]") as refused:
        list(chunks)
    assert refused.value.field == "item_column"
    # The blank line is skipped; every click before the short row came through in order.
    path.write_text("session,item\n" + "a,x\n" * 8 + "\n" + "b,y\n")
    chunks = list(iter_click_chunks(path, clicks_per_chunk=3))
    assert [len(sessions) for sessions, _ in chunks] == [3, 3, 2, 1]
    assert [item for _, items in chunks for item in items] == ["x"] * 8 + ["y"]


def test_an_index_fits_like_the_log_it_was_built_from(tmp_path: Path) -> None:
    clicks = random_clicks(5_000, seed=13)
    path = write_log(tmp_path / "clicks.csv", clicks)
    index = index_of(path, TIMED)
    sessions, items = read_click_log(path, "session_id", "item_id")
    _, log_lengths = np.unique(sessions, return_counts=True)
    _, log_counts = np.unique(items, return_counts=True)
    assert sorted(index.session_lengths.tolist()) == sorted(log_lengths.tolist())
    assert sorted(index.item_click_counts.tolist()) == sorted(log_counts.tolist())
    from_index, from_log = (
        fit_counts(index.session_lengths, index.item_click_counts),
        fit_click_log(sessions, items),
    )
    # The scipy fits jitter the counts in their order, so only the exponents are equal exactly.
    assert (from_index.alpha_length, from_index.alpha_clicks) == (
        from_log.alpha_length,
        from_log.alpha_clicks,
    )
    assert from_index.num_clicks == 5_000 and from_index.num_items == index.num_items
    times = [t for _, _, t in clicks]
    assert index.span_s == max(times) - min(times)
    assert index_of(path).span_s == 0.0
